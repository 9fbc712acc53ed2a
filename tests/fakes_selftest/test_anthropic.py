"""The official anthropic SDK must parse FakeAnthropic."""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import FakeAnthropic, Fault

MODEL = "claude-sonnet-4-6"
# A cut stream surfaces as the SDK's transport library error (httpx2 in anthropic 2.x).
CUT_ERRORS: tuple[type[BaseException], ...] = (anthropic.APIConnectionError, httpx.HTTPError)
if importlib.util.find_spec("httpx2") is not None:
    CUT_ERRORS += (importlib.import_module("httpx2").HTTPError,)
MSGS: Any = [{"role": "user", "content": "hello there world"}]
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def client(fake: FakeAnthropic, key: str = "test-key") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key=key, max_retries=0, timeout=5)


def test_message(fake_anthropic: FakeAnthropic) -> None:
    m = client(fake_anthropic).messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=MSGS,
        extra_body={"temperature": 0.1},
    )
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "Echo: hello there world"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (2 + 4 + 3 + 4, 4)
    sent = fake_anthropic.requests[-1]
    assert "test-key" in (sent.headers.get("x-api-key") or sent.headers["authorization"])
    assert "anthropic-version" in sent.headers and sent.body["temperature"] == 0.1
    assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 100


def test_headers(fake_anthropic: FakeAnthropic) -> None:
    raw = client(fake_anthropic).messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=MSGS
    )
    assert raw.headers["request-id"].startswith("req_")
    for kind in ("requests", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert raw.headers[f"anthropic-ratelimit-{kind}-{part}"]


def test_stop_reasons(fake_anthropic: FakeAnthropic) -> None:
    c = client(fake_anthropic)
    m = c.messages.create(model=MODEL, max_tokens=2, messages=MSGS)
    assert m.stop_reason == "max_tokens" and m.content[0].text == "Echo: hello"  # type: ignore[union-attr]
    m = c.messages.create(model=MODEL, max_tokens=50, messages=MSGS, stop_sequences=[" world"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == " world"
    assert m.content[0].text == "Echo: hello there"  # type: ignore[union-attr]


def test_stream_events(fake_anthropic: FakeAnthropic) -> None:
    with client(fake_anthropic).messages.stream(
        model=MODEL, max_tokens=100, messages=MSGS
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: hello there world"
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4

    with httpx.stream(
        "POST",
        fake_anthropic.url + "/v1/messages",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 10, "messages": MSGS, "stream": True},
    ) as resp:
        events = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_tool_use(fake_anthropic: FakeAnthropic) -> None:
    c = client(fake_anthropic)
    ask: Any = [{"role": "user", "content": "What is the weather in Berlin?"}]
    m = c.messages.create(model=MODEL, max_tokens=100, messages=ask, tools=TOOLS)
    block = m.content[0]
    assert m.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"city": "Berlin"}
    with c.messages.stream(model=MODEL, max_tokens=100, messages=ask, tools=TOOLS) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Berlin"}
    follow: Any = [
        *ask,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    m = c.messages.create(model=MODEL, max_tokens=100, messages=follow, tools=TOOLS)
    assert m.stop_reason == "end_turn"
    forced = c.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=MSGS,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert forced.stop_reason == "tool_use"


def test_errors(fake_anthropic: FakeAnthropic) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(fake_anthropic, key="bad").messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        client(fake_anthropic).messages.create(model="claude-nope", max_tokens=5, messages=MSGS)
    resp = httpx.post(
        fake_anthropic.url + "/v1/messages",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "messages": MSGS},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    no_version = httpx.post(
        fake_anthropic.url + "/v1/messages",
        headers={"x-api-key": "test-key"},
        json={"model": MODEL, "messages": MSGS, "max_tokens": 5},
    )
    assert no_version.status_code == 400


def test_faults(fake_anthropic: FakeAnthropic) -> None:
    c = client(fake_anthropic)
    fake_anthropic.push(
        Fault.error(429, retry_after=1.5), Fault.error(529), Fault.error(500), Fault.reset()
    )
    with pytest.raises(anthropic.RateLimitError) as rl:
        c.messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert rl.value.response.headers["retry-after"] == "1.5"
    assert rl.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert rl.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        c.messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as api_error:
        c.messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert api_error.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIConnectionError):
        c.messages.create(model=MODEL, max_tokens=5, messages=MSGS)


def test_stream_faults(fake_anthropic: FakeAnthropic) -> None:
    c = client(fake_anthropic)
    fake_anthropic.push(Fault.stream_error(2))
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        c.messages.stream(model=MODEL, max_tokens=100, messages=MSGS) as stream,
    ):
        got.extend(stream.text_stream)
    assert "".join(got) == "Echo: hello"
    assert err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    fake_anthropic.push(Fault.cut(1))
    with (
        pytest.raises(CUT_ERRORS),
        c.messages.stream(model=MODEL, max_tokens=100, messages=MSGS) as stream,
    ):
        list(stream.text_stream)
    fake_anthropic.push(Fault.stall(0.3))
    started = time.monotonic()
    c.messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert time.monotonic() - started >= 0.3


def test_models(fake_anthropic: FakeAnthropic) -> None:
    page = client(fake_anthropic).models.list(limit=1)
    assert [m.id for m in page.data] == [MODEL] and page.has_more
    assert page.data[0].type == "model" and page.data[0].display_name
    raw = httpx.get(
        fake_anthropic.url + "/v1/models",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
    ).json()
    assert raw["first_id"] == MODEL and raw["has_more"] is False
    assert json.dumps(raw)
