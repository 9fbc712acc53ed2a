"""The official openai SDK against the router, for every provider type behind it."""

from __future__ import annotations

import json

import openai
import pytest

from tests.integration.conftest import MODELS, Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY


def client(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_non_streaming(gateway: RouterServer, fakes: Fakes, name: str) -> None:
    resp = client(gateway).chat.completions.create(
        model=name,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there, router"},
        ],
        max_tokens=50,
        temperature=0.3,
    )
    assert resp.choices[0].message.content == "Echo: Hello there, router"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == name
    # The fakes count 4 tokens per message plus words: system (3) + user (3) = 14.
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (14, 4)
    assert resp.usage.total_tokens == 18
    upstream = fakes.by_provider(MODELS[name][0])
    sent = upstream.requests[-1]
    body = sent.body
    # Every provider hears from Switchyard by name, not from its HTTP client's version.
    assert sent.headers["user-agent"] == "Switchyard"
    # What reached the provider is in its own format.
    if name == "claude":
        assert body["system"] == "You are terse."
        assert body["max_tokens"] == 50 and body["temperature"] == 0.3
        assert sent.headers["x-api-key"] == "sk-ant-secret-789"
        assert sent.headers["anthropic-version"] == "2023-06-01"
    elif name == "ollama-llama":
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
        assert body["options"]["num_predict"] == 50 and body["stream"] is False
    else:
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
        assert body.get("max_tokens", body.get("max_completion_tokens")) == 50
    if name == "azure-gpt":
        assert sent.path == "/openai/deployments/gpt-4o-mini-deploy/chat/completions"
        assert sent.query["api-version"] == "2024-10-21"
        assert sent.headers["api-key"] == "azure-secret-456"
    if name == "gpt-4o-mini":
        assert sent.headers["authorization"] == "Bearer sk-openai-secret-123"


@pytest.mark.parametrize("name", list(MODELS))
def test_streaming_with_usage(gateway: RouterServer, name: str) -> None:
    stream = client(gateway).chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "count these four words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: count these four words"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 5 and usage.prompt_tokens == 8


def test_streaming_without_usage_sends_no_usage_chunk(gateway: RouterServer) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="llama", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(gateway: RouterServer) -> None:
    for name in MODELS:
        resp = client(gateway).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
        )
        assert resp.choices[0].finish_reason == "length", name
        assert resp.choices[0].message.content == "Echo: one", name


def test_multi_turn_reaches_anthropic_as_alternating_turns(
    gateway: RouterServer, fakes: Fakes
) -> None:
    client(gateway).chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    )
    body = fakes.anthropic.requests[-1].body
    assert body["system"] == "sys"
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second"},
    ]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("name", ["gpt-4o-mini", "claude", "ollama-llama", "azure-gpt"])
def test_tool_calls_translate_both_ways(gateway: RouterServer, fakes: Fakes, name: str) -> None:
    c = client(gateway)
    messages: list = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    resp = c.chat.completions.create(model=name, messages=messages, tools=[WEATHER_TOOL])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lisbon"}
    # The tool's answer goes back in the second turn.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    c.chat.completions.create(model=name, messages=messages, tools=[WEATHER_TOOL])
    sent = fakes.by_provider(MODELS[name][0]).requests[-1].body
    if name == "claude":
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][1]["content"][0]["input"] == {"city": "Lisbon"}
        assert sent["messages"][2]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": "18 C and sunny",
        }
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    elif name == "ollama-llama":
        assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Lisbon"}
        assert sent["messages"][2]["role"] == "tool"
    else:
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "18 C and sunny",
        }


@pytest.mark.parametrize("name", ["gpt-4o-mini", "claude"])
def test_streamed_tool_calls(gateway: RouterServer, name: str) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "weather in Oslo please"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or ()
    )
    names = [
        tc.function.name
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or ()
        if tc.function and tc.function.name
    ]
    assert names == ["get_weather"]
    assert json.loads(args) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_models_lists_the_callers_models(gateway: RouterServer) -> None:
    ids = sorted(m.id for m in client(gateway).models.list())
    assert ids == sorted(MODELS)


def test_auto_model_lets_the_router_choose(gateway: RouterServer) -> None:
    resp = client(gateway).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.model in MODELS
