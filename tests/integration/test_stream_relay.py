"""Same-protocol streams are relayed as the provider wrote them: its own fields reach the
client, only the id and model become the router's, and accounting still reads usage."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}
USER = [{"role": "user", "content": "Tell me about Paris in a few words"}]


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def openai_stream(gw: RouterServer, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": model, "messages": USER, "stream": True, **extra},
        timeout=10,
    )


def test_an_azure_stream_keeps_its_filter_results_and_gets_the_routers_names(
    gateway: RouterServer,
) -> None:
    r = openai_stream(gateway, "azure-gpt")
    chunks = events(r.text)
    assert r.text.rstrip().endswith("data: [DONE]")
    # Azure's own: the prompt's filter verdict first, each content chunk's after.
    assert "prompt_filter_results" in chunks[0]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert content and all("content_filter_results" in c["choices"][0] for c in content)
    ours = "chatcmpl-" + r.headers["x-switchyard-request-id"].replace("-", "")
    named = [c for c in chunks if c.get("id")]
    assert {c["id"] for c in named} == {ours}
    assert {c["model"] for c in named} == {"azure-gpt"}  # not the deployment's name
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert text == "Echo: Tell me about Paris in a few words"


@pytest.mark.parametrize("asked", [False, True])
def test_the_usage_chunk_reaches_only_a_client_that_asked(
    gateway: RouterServer, fakes: Fakes, asked: bool
) -> None:
    extra = {"stream_options": {"include_usage": True}} if asked else {}
    r = openai_stream(gateway, "llama", **extra)
    usage = [c["usage"] for c in events(r.text) if c.get("usage")]
    assert fakes.vllm.requests[-1].body["stream_options"] == {"include_usage": True}
    if asked:
        assert len(usage) == 1 and usage[0]["completion_tokens"] > 0
    else:
        assert usage == []
    # Accounting read the provider's own count either way.
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{gateway.admin}/metrics").text.splitlines()
        if line.startswith("switchyard_tokens_total{") and 'direction="completion"' in line
    ]
    assert counted and counted[0] == 9  # the words of "Echo: Tell me about Paris in a few words"


def test_an_anthropic_stream_says_the_providers_input_tokens_from_the_start(
    gateway: RouterServer,
) -> None:
    body = {"model": "claude", "max_tokens": 100, "messages": USER, "stream": True}
    headers = AUTH | {"anthropic-version": "2023-06-01"}
    r = httpx.post(f"{gateway.url}/v1/messages", headers=headers, json=body, timeout=10)
    evs = events(r.text)
    start = evs[0]["message"]
    done = httpx.post(
        f"{gateway.url}/v1/messages", headers=headers, json={**body, "stream": False}
    ).json()
    assert start["usage"]["input_tokens"] == done["usage"]["input_tokens"]
    assert start["id"] == "msg_" + r.headers["x-switchyard-request-id"].replace("-", "")
    assert start["model"] == "claude"  # the table's name, not claude-haiku-4-5
    assert [e["type"] for e in evs][-1] == "message_stop"
    assert "event: ping" in r.text  # the provider's own keep-alive passes too


def test_a_translated_anthropic_stream_states_no_estimate_only_what_was_reported(
    gateway: RouterServer,
) -> None:
    """An Anthropic client of an OpenAI-protocol model: message_start holds nothing the
    provider did not say (it says its usage at the end), and the SDK's final message
    has the provider's count."""
    import anthropic

    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    asked = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": USER}
    with client.messages.stream(**asked) as stream:  # type: ignore[arg-type]
        first = next(iter(stream))
        final = stream.get_final_message()
    assert first.type == "message_start" and first.message.usage.input_tokens == 0
    whole = client.messages.create(**asked)  # type: ignore[arg-type]
    assert final.usage.input_tokens == whole.usage.input_tokens > 0
    assert final.usage.output_tokens == whole.usage.output_tokens > 0


def test_a_relayed_stream_never_passes_on_broken_json(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [
                provider(
                    "primary", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY", priority=1
                ),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("chat", "primary", "gpt-4o-mini"),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
        )
    )
    # Garbage before the first event: nothing was sent yet, so the backup answers.
    fakes.openai.push(Fault.malformed())
    r = openai_stream(gw, "chat")
    assert r.headers["x-switchyard-provider"] == "backup"
    assert "broken" not in r.text and r.text.rstrip().endswith("data: [DONE]")
    # Every event the client got is JSON, and the stream says it ended in an error.
    fakes.openai.push(Fault.stream_error(2))
    r = openai_stream(gw, "chat")
    assert r.headers["x-switchyard-provider"] == "primary"
    assert events(r.text)[-1]["error"]
