"""The official anthropic SDK against the router, for every provider type behind it."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.integration.conftest import MODELS, Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY


def client(gw: RouterServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_create(gateway: RouterServer, fakes: Fakes, name: str) -> None:
    msg = client(gateway).messages.create(
        model=name,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello from anthropic"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Echo: Hello from anthropic"
    assert msg.stop_reason == "end_turn"
    assert msg.model == name
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (13, 4)
    sent = fakes.by_provider(MODELS[name][0]).requests[-1].body
    if name not in ("claude",):
        assert sent["messages"][0]["role"] == "system"


@pytest.mark.parametrize("name", list(MODELS))
def test_stream(gateway: RouterServer, name: str) -> None:
    with client(gateway).messages.stream(
        model=name,
        max_tokens=64,
        messages=[{"role": "user", "content": "stream me please"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == "Echo: stream me please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    assert final.usage.input_tokens == 7


def test_raw_event_sequence(gateway: RouterServer) -> None:
    """The SDK hides pings, so read the wire: Anthropic's exact event order."""
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        json={
            "model": "gpt-4o-mini",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "a b"}],
        },
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names
    assert names == (
        ["message_start", "content_block_start", "ping"]
        + ["content_block_delta"] * 3
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert datas[-2]["usage"]["output_tokens"] == 3


def test_max_tokens_stop_reason(gateway: RouterServer) -> None:
    msg = client(gateway).messages.create(
        model="llama", max_tokens=1, messages=[{"role": "user", "content": "x y z"}]
    )
    assert msg.stop_reason == "max_tokens"


TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.mark.parametrize("name", ["gpt-4o-mini", "claude"])
def test_tool_use_round_trip(gateway: RouterServer, fakes: Fakes, name: str) -> None:
    c = client(gateway)
    msg = c.messages.create(
        model=name,
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "weather in Rome?"}],
    )
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Rome"}
    c.messages.create(
        model=name,
        max_tokens=100,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Rome?"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}],
            },
        ],
    )
    sent = fakes.by_provider(MODELS[name][0]).requests[-1].body
    if name == "gpt-4o-mini":
        assert sent["messages"][1]["tool_calls"][0]["id"] == use.id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "21 C"}
    else:
        assert sent["messages"][2]["content"][0]["tool_use_id"] == use.id


def test_streamed_tool_use(gateway: RouterServer) -> None:
    with client(gateway).messages.stream(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "weather in Kyiv?"}],
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "Kyiv"}
    assert final.stop_reason == "tool_use"


def test_errors_come_in_anthropic_shape(gateway: RouterServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client(gateway).messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(
            model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_tools_stay_declared_when_none_may_be_called(gateway: RouterServer, fakes: Fakes) -> None:
    """Anthropic refuses a history with tool_use blocks unless the tools are declared."""
    import openai

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "weather in Rome?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        tool_choice="none",
    )
    sent = fakes.anthropic.requests[-1].body
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "none"}
