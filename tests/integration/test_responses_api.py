"""``POST /v1/responses`` through the official openai SDK, to every provider type."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.integration.conftest import MODELS, Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def client(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_text_in_text_out(gateway: RouterServer, name: str) -> None:
    resp = client(gateway).responses.create(
        model=name, instructions="You are terse.", input="Hello there, router"
    )
    assert resp.status == "completed"
    assert resp.output_text == "Echo: Hello there, router"
    assert resp.id.startswith("resp_") and len(resp.id) > 30
    assert resp.usage is not None and resp.usage.input_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.model == name and resp.store is True


@pytest.mark.parametrize("name", list(MODELS))
def test_streaming_has_the_real_event_sequence(gateway: RouterServer, name: str) -> None:
    with client(gateway).responses.stream(model=name, input="Hello there, router") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Echo: Hello there, router"
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("name", ["gpt-4o-mini", "claude", "ollama-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_round_trip(
    gateway: RouterServer, fakes: Fakes, name: str, stream: bool
) -> None:
    c = client(gateway)
    first_input: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    if stream:
        with c.responses.stream(model=name, input=first_input, tools=[WEATHER]) as s:  # type: ignore[arg-type,list-item]
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        first = c.responses.create(model=name, input=first_input, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    calls = [item for item in first.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"]
    # The tool's answer goes back as a function_call_output item, after the call.
    follow = c.responses.create(
        model=name,
        input=[
            *first_input,
            calls[0].model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert follow.status == "completed"


def test_text_format_json_schema_reaches_the_provider_as_response_format(
    gateway: RouterServer, fakes: Fakes
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    client(gateway).responses.create(
        model="gpt-4o-mini",
        input="Where is the Eiffel tower?",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
    )
    sent = fakes.openai.requests[-1].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    client(gateway).responses.create(
        model="ollama-llama",
        input="Where is the Eiffel tower?",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
    )
    assert fakes.ollama.requests[-1].body["format"] == schema


def test_what_is_not_served_is_refused_by_name(gateway: RouterServer) -> None:
    c = client(gateway)
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_123")
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(
            model="gpt-4o-mini",
            input="hi",
            tools=[{"type": "web_search_preview"}],  # type: ignore[list-item]
        )
    assert err.value.body["param"].startswith("tools[0]")  # type: ignore[index]
