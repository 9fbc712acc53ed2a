"""The field policy: a field Switchyard does not model is forwarded as sent to a provider
of the protocol the client spoke, and never dropped silently on the way to another.

Asserted on what reached the fake providers, field by field, through the official SDKs.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Factory
from tests.integration.conftest import Fakes, five_models, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, table

USER = [{"role": "user", "content": "Weather in Paris?"}]
DROP = {"X-Switchyard-Drop-Unsupported-Params": "true"}
#: Structured output, sampling and the rest the neutral request has no field for, as
#: the openai SDK sends them; plus one no SDK knows yet.
OPENAI_FIELDS: dict[str, Any] = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
                "required": ["city", "celsius"],
                "additionalProperties": False,
            },
        },
    },
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "metadata": {"team": "search"},
    "reasoning_effort": "low",
    "service_tier": "auto",
    "store": False,
}


def oai(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


def claude(gw: RouterServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


def sent(fake: Any) -> dict[str, Any]:
    body = fake.requests[-1].body
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("name", "fake"), [("gpt-4o-mini", "openai"), ("azure-gpt", "azure"), ("llama", "vllm")]
)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_fields_reach_openai_protocol_providers_as_sent(
    gateway: RouterServer, fakes: Fakes, name: str, fake: str, stream: bool
) -> None:
    client = oai(gateway)
    kwargs: dict[str, Any] = {
        "model": name,
        "messages": USER,
        "extra_body": {"future_field": {"nested": [1, 2]}},
        **OPENAI_FIELDS,
    }
    if stream:
        with client.chat.completions.create(stream=True, **kwargs) as chunks:
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        assert client.chat.completions.create(**kwargs).choices[0].message.content
    body = sent(getattr(fakes, fake))
    for field, value in OPENAI_FIELDS.items():
        assert body[field] == value, field
    assert body["future_field"] == {"nested": [1, 2]}
    # What the router sets is its own: the upstream model name, streaming usage.
    assert body.get("model", "gpt-4o-mini-deploy") != name or fake == "openai"
    if stream:
        assert body["stream_options"] == {"include_usage": True}


def test_anthropic_fields_reach_anthropic_as_sent(gateway: RouterServer, fakes: Fakes) -> None:
    msg = claude(gateway).messages.create(
        model="claude",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Think, then answer."}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        service_tier="auto",
        extra_body={"top_k": 5, "future_field": True},
    )
    assert msg.content
    body = sent(fakes.anthropic)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["top_k"] == 5
    assert body["service_tier"] == "auto"
    assert body["future_field"] is True
    assert body["model"] == "claude-haiku-4-5"


def test_a_field_another_protocol_has_no_place_for_is_a_400_naming_it(
    gateway: RouterServer, fakes: Fakes
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).chat.completions.create(model="claude", messages=USER, seed=7)  # type: ignore[arg-type]
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == "seed"
    assert "X-Switchyard-Drop-Unsupported-Params" in body["message"]
    assert fakes.anthropic.completions == 0

    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude(gateway).messages.create(
            model="ollama-llama",
            max_tokens=64,
            messages=USER,
            extra_body={"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        )
    abody = aerr.value.body
    assert isinstance(abody, dict) and abody["error"]["field"] == "thinking"
    assert fakes.ollama.completions == 0


def test_the_header_drops_them_and_the_provider_never_sees_them(
    gateway: RouterServer, fakes: Fakes
) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="claude",
        messages=USER,  # type: ignore[arg-type]
        seed=7,
        presence_penalty=0.5,
        extra_headers=DROP,
        extra_body={"we\r\nird": 1},
    )
    assert raw.parse().choices[0].message.content
    body = sent(fakes.anthropic)
    assert "seed" not in body and "presence_penalty" not in body
    # Dropped as asked, and said so; a key unfit for a header is only counted.
    said = raw.headers["x-switchyard-dropped-params"].split(", ")
    assert sorted(said) == ["1 more", "presence_penalty", "seed"]
    # Streamed, the same; and nothing is said when nothing was dropped.
    with oai(gateway).chat.completions.with_streaming_response.create(
        model="claude",
        messages=USER,
        seed=7,
        stream=True,
        extra_headers=DROP,  # type: ignore[arg-type]
    ) as streamed:
        assert streamed.headers["x-switchyard-dropped-params"] == "seed"
    plain = oai(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=USER,
        seed=7,
        extra_headers=DROP,  # type: ignore[arg-type]
    )
    assert "x-switchyard-dropped-params" not in plain.headers


def test_the_table_can_drop_them_for_everyone(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(five_providers(fakes), five_models(), routing={"dropUnsupportedParams": True})
    )
    msg = claude(gw).messages.create(
        model="llama",
        max_tokens=64,
        messages=USER,
        extra_body={"top_k": 5},
    )
    assert msg.content
    assert "top_k" not in sent(fakes.vllm)


def test_a_group_of_both_protocols_serves_them_on_the_one_that_takes_them(
    fakes: Fakes, router: Factory
) -> None:
    """Model "chat" on Anthropic first, OpenAI second: a request with response_format
    goes to OpenAI, the one that can honour it, without a failed attempt."""
    providers = [p for p in five_providers(fakes) if p["name"] in ("anthropic", "openai")]
    providers[0]["priority"], providers[1]["priority"] = 1, 2  # anthropic first
    gw = router(
        table(
            providers,
            [
                {**m, "name": "chat"}
                for m in five_models()
                if m["provider"] in ("anthropic", "openai")
            ],
        )
    )
    resp = oai(gw).chat.completions.create(
        model="chat",
        messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    assert resp.choices[0].message.content
    assert fakes.anthropic.completions == 0
    assert sent(fakes.openai)["response_format"] == {"type": "json_object"}


def test_a_cached_answer_is_kept_apart_by_the_fields(gateway: RouterServer, fakes: Fakes) -> None:
    client = oai(gateway)
    for fmt in ({"type": "json_object"}, {"type": "json_object"}, {"type": "text"}):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,  # type: ignore[arg-type]
            temperature=0,
            response_format=fmt,  # type: ignore[arg-type]
        )
    # The second is answered from the cache; the third asks for another format.
    assert fakes.openai.completions == 2


SCHEMA = OPENAI_FIELDS["response_format"]["json_schema"]["schema"]


@pytest.mark.parametrize(
    ("response_format", "format_sent"),
    [
        (OPENAI_FIELDS["response_format"], SCHEMA),
        ({"type": "json_object"}, "json"),
    ],
)
def test_structured_output_reaches_ollama_as_its_format(
    gateway: RouterServer, fakes: Fakes, response_format: dict[str, Any], format_sent: Any
) -> None:
    resp = oai(gateway).chat.completions.create(
        model="ollama-llama",
        messages=USER,  # type: ignore[arg-type]
        response_format=response_format,  # type: ignore[arg-type]
        seed=7,
        presence_penalty=0.5,
    )
    assert resp.choices[0].message.content
    body = sent(fakes.ollama)
    assert body["format"] == format_sent
    assert body["options"]["seed"] == 7 and body["options"]["presence_penalty"] == 0.5
    assert "response_format" not in body and "seed" not in body


def test_what_ollama_has_no_place_for_is_still_refused(gateway: RouterServer, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).chat.completions.create(
            model="ollama-llama",
            messages=USER,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
            logprobs=True,
        )
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "logprobs"
    assert fakes.ollama.completions == 0


def test_anthropic_top_k_reaches_ollama_as_its_option(gateway: RouterServer, fakes: Fakes) -> None:
    claude(gateway).messages.create(
        model="ollama-llama",
        max_tokens=64,
        messages=USER,  # type: ignore[arg-type]
        extra_body={"top_k": 5},
    )
    assert sent(fakes.ollama)["options"]["top_k"] == 5


@pytest.mark.parametrize(
    ("response_format", "field"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema.name"),
        (
            {"type": "json_schema", "json_schema": {"name": "n", "schema": 5}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_a_malformed_response_format_is_a_400_naming_its_part(
    gateway: RouterServer, response_format: dict[str, Any], field: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).chat.completions.create(
            model="ollama-llama",
            messages=USER,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
        )
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == field


STRICT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def test_a_tools_strict_flag_reaches_openai_and_not_ollama(
    gateway: RouterServer, fakes: Fakes
) -> None:
    for name in ("gpt-4o-mini", "ollama-llama"):
        oai(gateway).chat.completions.create(
            model=name,
            messages=USER,  # type: ignore[arg-type]
            tools=[STRICT_TOOL],  # type: ignore[list-item]
        )
    assert sent(fakes.openai)["tools"][0]["function"]["strict"] is True
    assert "strict" not in sent(fakes.ollama)["tools"][0]["function"]
    oai(gateway).responses.create(
        model="gpt-4o-mini",
        input="Weather in Paris?",
        tools=[{**STRICT_TOOL["function"], "type": "function"}],  # type: ignore[list-item]
    )
    assert sent(fakes.openai)["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_parallel_tool_calls_false_is_anthropics_disable_parallel_tool_use(
    gateway: RouterServer, fakes: Fakes, tool_choice: Any, expected: dict[str, Any]
) -> None:
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    oai(gateway).chat.completions.create(
        model="claude",
        messages=USER,  # type: ignore[arg-type]
        tools=[STRICT_TOOL],  # type: ignore[list-item]
        parallel_tool_calls=False,
        **extra,
    )
    body = sent(fakes.anthropic)
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_the_responses_api_names_its_own_field(gateway: RouterServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).responses.create(
            model="claude",
            input="Where is Paris?",
            text={"format": {"type": "json_object"}},
        )
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "text.format"
    assert "response_format" not in body["message"]


@pytest.mark.parametrize("name", ["gpt-4o-mini", "ollama-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_clients_see_tool_ids_in_anthropics_shape_and_can_answer_them(
    gateway: RouterServer, fakes: Fakes, name: str, stream: bool
) -> None:
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    c = claude(gateway)
    if stream:
        with c.messages.stream(model=name, max_tokens=64, messages=asked, tools=[tool]) as s:  # type: ignore[arg-type,list-item]
            msg = s.get_final_message()
    else:
        msg = c.messages.create(model=name, max_tokens=64, messages=asked, tools=[tool])  # type: ignore[arg-type,list-item]
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].id.startswith("toolu_"), uses[0].id
    follow = c.messages.create(
        model=name,
        max_tokens=64,
        tools=[tool],  # type: ignore[list-item]
        messages=[
            *asked,  # type: ignore[list-item]
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"}],
            },
        ],
    )
    assert follow.content


class Weather(BaseModel):
    city: str
    celsius: float


def test_openai_structured_output_reaches_anthropic_as_output_config(
    gateway: RouterServer, fakes: Fakes
) -> None:
    """The openai SDK's own helper, with a pydantic model, against a Claude model."""
    done = oai(gateway).chat.completions.parse(
        model="claude",
        messages=USER,
        response_format=Weather,  # type: ignore[arg-type]
    )
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed.city == "Paris"
    body = sent(fakes.anthropic)
    fmt = body["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["properties"].keys() == {"city", "celsius"}
    assert "response_format" not in body


@pytest.mark.parametrize(("name", "fake"), [("gpt-4o-mini", "openai"), ("ollama-llama", "ollama")])
def test_anthropic_structured_output_reaches_other_protocols(
    gateway: RouterServer, fakes: Fakes, name: str, fake: str
) -> None:
    """The anthropic SDK's own helper against an OpenAI and an Ollama model."""
    done = claude(gateway).messages.parse(
        model=name,
        max_tokens=200,
        messages=USER,
        output_format=Weather,  # type: ignore[arg-type]
    )
    assert isinstance(done.parsed_output, Weather) and done.parsed_output.city == "Paris"
    body = sent(getattr(fakes, fake))
    schema = (
        body["response_format"]["json_schema"]["schema"] if fake == "openai" else body["format"]
    )
    assert schema["properties"].keys() == {"city", "celsius"}
    assert "output_config" not in body


def test_json_mode_has_no_anthropic_counterpart(gateway: RouterServer, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).chat.completions.create(
            model="claude",
            messages=USER,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert fakes.anthropic.completions == 0


def test_output_config_with_more_than_a_format_stays_with_anthropic(
    gateway: RouterServer, fakes: Fakes
) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        claude(gateway).messages.create(
            model="gpt-4o-mini",
            max_tokens=100,
            messages=USER,  # type: ignore[arg-type]
            output_config={"effort": "low"},
        )
    assert "output_config" in err.value.message
    assert fakes.openai.completions == 0


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_come_back_as_the_provider_gave_them(
    gateway: RouterServer, fakes: Fakes, stream: bool
) -> None:
    c = oai(gateway)
    asked: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": USER,
        "logprobs": True,
        "top_logprobs": 2,
    }
    if stream:
        pieces = [
            ch.choices[0].logprobs
            for ch in c.chat.completions.create(**asked, stream=True)
            if ch.choices and ch.choices[0].delta.content
        ]
        tokens = [p.content[0] for p in pieces if p is not None and p.content]
        assert len(tokens) == len(pieces) > 1
    else:
        done = c.chat.completions.create(**asked)
        lp = done.choices[0].logprobs
        assert lp is not None and lp.content
        tokens = lp.content
    assert "".join(t.token for t in tokens) == "Echo: Weather in Paris?"
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_anthropic_betas_reach_anthropic_and_are_fields_elsewhere(
    gateway: RouterServer, fakes: Fakes
) -> None:
    """``anthropic-beta`` goes on to an Anthropic provider as sent; to another protocol a
    beta that changes what is generated is refused by name, or dropped when asked, like
    any body field. Hints and message threads (which Switchyard holds) pass anywhere."""
    betas = ["context-1m-2025-08-07", "prompt-caching-2024-07-31"]
    claude(gateway).beta.messages.create(model="claude", max_tokens=64, messages=USER, betas=betas)
    assert fakes.anthropic.requests[-1].headers["anthropic-beta"] == ",".join(betas)
    with pytest.raises(anthropic.BadRequestError) as err:
        claude(gateway).beta.messages.create(
            model="gpt-4o-mini", max_tokens=64, messages=USER, betas=betas
        )
    assert err.value.body["error"]["field"] == "anthropic-beta.context-1m-2025-08-07"  # type: ignore[index]
    assert fakes.openai.completions == 0
    raw = claude(gateway).beta.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=64, messages=USER, betas=betas, extra_headers=DROP
    )
    assert raw.parse().content
    assert raw.headers["x-switchyard-dropped-params"] == "anthropic-beta.context-1m-2025-08-07"
    assert "anthropic-beta" not in fakes.openai.requests[-1].headers
    # Hints alone go anywhere; the threads beta is Switchyard's own and goes nowhere.
    claude(gateway).beta.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=USER,
        betas=["prompt-caching-2024-07-31", "message-threads-2026-08-12"],
    )
    claude(gateway).beta.messages.create(
        model="claude", max_tokens=64, messages=USER, betas=["message-threads-2026-08-12"]
    )
    assert "anthropic-beta" not in fakes.anthropic.requests[-1].headers
    # A header that names no beta is a 400 naming it.
    with pytest.raises(anthropic.BadRequestError) as err:
        claude(gateway).messages.create(
            model="claude",
            max_tokens=64,
            messages=USER,
            extra_headers={"anthropic-beta": "no such thing!"},
        )
    assert err.value.body["error"]["field"] == "anthropic-beta"  # type: ignore[index]
