"""A stream that breaks after its first byte, continued on another candidate (opt-in)."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table
from tests.support.usage_rows import wait_rows

CONTINUE = {"x-switchyard-continue-streams": "true"}
ASK = "one two three four five six seven eight"
BACKUPS = {
    "vllm": ("meta-llama/Llama-3.1-8B-Instruct", "vllm"),
    "openai": ("gpt-4o-mini", "openai"),
    "anthropic": ("claude-haiku-4-5", "anthropic"),
}


def pair(fakes: Fakes, router: Factory, backup: str = "vllm", **routing: Any) -> RouterServer:
    model_name, kind = BACKUPS[backup]
    primary_kind, primary_fake, primary_model = (
        ("vllm", fakes.vllm, BACKUPS["vllm"][0])
        if backup == "openai"
        else ("openai", fakes.openai, "gpt-4o-mini")
    )
    backup_fake = getattr(fakes, backup)
    key_env = {"openai": "SY_TEST_OPENAI_KEY", "anthropic": "SY_TEST_ANTHROPIC_KEY"}
    return router(
        table(
            [
                provider(
                    "primary",
                    primary_kind,
                    primary_fake.url,
                    key_env=key_env.get(primary_kind),
                    priority=1,
                ),
                provider("backup", kind, backup_fake.url, key_env=key_env.get(kind), priority=2),
            ],
            [model("chat", "primary", primary_model), model("chat", "backup", model_name)],
            routing=routing,
        )
    )


def stream_text(gw: RouterServer, headers: dict[str, str]) -> tuple[str, Any]:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    text, last = "", None
    for chunk in client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": ASK}],
        stream=True,
        extra_headers=headers,
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            last = chunk
    return text, last


@pytest.mark.parametrize("backup", list(BACKUPS))
def test_a_cut_stream_goes_on_from_another_provider(
    fakes: Fakes, router: Factory, backup: str
) -> None:
    gw = pair(fakes, router, backup)
    broken = fakes.vllm if backup == "openai" else fakes.openai
    broken.push(Fault.cut(3))
    text, last = stream_text(gw, CONTINUE)
    before = "Echo: one two"  # what the primary sent before it broke
    assert text.startswith(before)
    # The rest came from the backup, which was given the text so far to continue.
    assert text[len(before) :].strip()
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["switchyard"] == {"continued_from": ["primary"]}
    sent = getattr(fakes, backup).requests[-1].body
    if backup == "anthropic":
        assert sent["messages"][-1] == {"role": "assistant", "content": before}
    else:
        assert sent["messages"][-1 if backup == "vllm" else -2] == {
            "role": "assistant",
            "content": before,
        }
    if backup == "vllm":
        assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    if backup == "openai":
        assert sent["messages"][-1]["role"] == "user"
        assert "Continue it exactly where it stopped" in sent["messages"][-1]["content"]
    # One usage record: served, marked, with both parts' tokens.
    row = wait_rows(None, gw.state_dir, 1)[-1]
    assert (row["status"], row["error_class"], row["provider"]) == (
        "ok",
        "stream_continued",
        "backup",
    )
    assert row["completion_tokens"] > len(before.split())


def test_a_stall_mid_stream_is_continued_within_its_deadline(fakes: Fakes, router: Factory) -> None:
    gw = pair(
        fakes,
        router,
        continueStreams=True,
        stall={"minSamples": 5, "floorMs": 200},
        breaker={"failureThreshold": 3, "cooldownSeconds": 60},
    )
    for _ in range(5):
        stream_text(gw, {})
    fakes.openai.push(Fault.stall_mid(2, 8))
    started = time.perf_counter()
    text, last = stream_text(gw, {})
    assert time.perf_counter() - started < 2.0
    assert text.startswith("Echo: one") and last.model_extra["switchyard"]
    # A client can still say no, for one request.
    fakes.openai.push(Fault.cut(3))
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream_text(gw, {"x-switchyard-continue-streams": "false"})


def test_a_table_that_says_no_is_not_overridden_by_a_request(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router, continueStreams=False)
    with pytest.raises(openai.BadRequestError) as err:
        stream_text(gw, CONTINUE)
    assert err.value.body["param"] == "x-switchyard-continue-streams"  # type: ignore[index]
    assert fakes.openai.completions == 0
    # Saying no is always allowed; a table may leave the choice to requests.
    assert stream_text(gw, {"x-switchyard-continue-streams": "false"})[0]
    gw = pair(fakes, router, continueStreams={"default": False, "clientMayEnable": True})
    fakes.openai.push(Fault.cut(3))
    text, last = stream_text(gw, CONTINUE)
    assert text.startswith("Echo: one") and last.model_extra["switchyard"]


def test_without_it_a_cut_stream_ends_in_an_error(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router)
    fakes.openai.push(Fault.cut(3))
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream_text(gw, {})
    assert fakes.vllm.completions == 0


def test_an_anthropic_client_sees_one_message(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router, continueStreams=True)
    fakes.openai.push(Fault.cut(3))
    client = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    with client.messages.stream(
        model="chat", max_tokens=200, messages=[{"role": "user", "content": ASK}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.startswith("Echo: one two") and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 2


def test_a_tool_call_cut_mid_way_is_not_continued(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router, continueStreams=True)
    fakes.openai.push(Fault.cut(1))
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"location": {"type": "string"}},
                        },
                    },
                }
            ],
        },
        timeout=10,
    )
    assert '"error"' in r.text
    assert fakes.vllm.completions == 0
