"""The wire protocols' pure translations, table-driven from wire examples in ``wire/``.

OpenAI ⇄ neutral ⇄ Anthropic ⇄ Ollama: what a provider answers becomes the neutral
result or events; a neutral request becomes each provider's body; what a client sends
becomes a neutral request; neutral events become each surface's stream.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from switchyard.router.core.accounting import Completed
from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    Message,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.core.cost import ZERO
from switchyard.router.errors import (
    BadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from switchyard.router.http.body import validate
from switchyard.router.protocols import anthropic, native, ollama, openai

WIRE = Path(__file__).parent / "wire"
PROVIDER = "p"


def body(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def lines(name: str) -> list[bytes]:
    """A stream as an adapter reads it: one line at a time, blank lines skipped."""
    raw = (WIRE / name).read_bytes()
    return [line + b"\n" for line in raw.split(b"\n") if line.strip()]


Decoder = openai.ChunkDecoder | anthropic.EventDecoder | ollama.LineDecoder


def decode(decoder: Decoder, name: str) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for line in lines(name):
        events += decoder.feed(line)
        if decoder.done:
            return events
    raise decoder.incomplete()


# -- what providers answer → neutral results ----------------------------------------------


class _RandomCallId:
    """Equal to any id Switchyard gives an Ollama tool call: ``call_`` and 24 hex digits,
    random so ids stay unique across a conversation's turns."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"call_[0-9a-f]{24}", other) is not None

    def __repr__(self) -> str:
        return "call_<random>"


OLLAMA_ID = _RandomCallId()

RESULTS = [
    (
        openai.result_of,
        "openai/completion-text.json",
        ChatResult(
            "The sky is blue because of Rayleigh scattering.",
            "stop",
            Usage(19, 10),
            "gpt-4o-mini-2024-07-18",
            upstream_id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        ),
    ),
    (
        openai.result_of,
        "openai/completion-tools.json",
        ChatResult(
            "",
            "tool_calls",
            Usage(82, 17),
            "gpt-4o-mini",
            tool_calls=[
                ToolCall("call_abc123", "get_current_weather", '{\n"location": "Boston, MA"\n}'),
                ToolCall("call_def456", "get_time", '{"tz": "America/New_York"}'),
            ],
            upstream_id="chatcmpl-abc123",
        ),
    ),
    (
        openai.result_of,
        "openai/completion-vllm-length.json",
        ChatResult(
            "Once upon a",
            "length",
            Usage(12, 4),
            "meta-llama/Llama-3.1-8B-Instruct",
            upstream_id="cmpl-9f2b1c6f0e",
        ),
    ),
    (
        anthropic.result_of,
        "anthropic/message-text-tool.json",
        ChatResult(
            "I'll check the weather in San Francisco.",
            "tool_calls",
            Usage(472, 89),
            "claude-sonnet-4-5-20250929",
            tool_calls=[
                ToolCall(
                    "toolu_01A09q90qw90lq917835lq9",
                    "get_weather",
                    '{"location":"San Francisco, CA","unit":"celsius"}',
                )
            ],
            upstream_id="msg_01Aq9w938a90dw8q",
        ),
    ),
    (
        anthropic.result_of,
        "anthropic/message-cached.json",
        # Cached prompt tokens are prompt tokens: 10 + 200 written + 1800 read.
        ChatResult(
            "Hi there.", "length", Usage(2010, 5), "claude-haiku-4-5", upstream_id="msg_0123"
        ),
    ),
    (
        ollama.result_of,
        "ollama/chat.json",
        ChatResult("Hello! How are you today?", "stop", Usage(26, 298), "llama3.2"),
    ),
    (
        ollama.result_of,
        "ollama/chat-tools.json",
        ChatResult(
            "",
            "tool_calls",
            Usage(122, 33),
            "llama3.2",
            tool_calls=[
                ToolCall(
                    OLLAMA_ID,  # type: ignore[arg-type]
                    "get_current_weather",
                    '{"format":"celsius","location":"Paris, FR"}',
                )
            ],
        ),
    ),
]


@pytest.mark.parametrize(("parse", "name", "expected"), RESULTS, ids=[r[1] for r in RESULTS])
def test_answers_become_neutral_results(parse: Any, name: str, expected: ChatResult) -> None:
    assert parse(body(name), "asked-for", PROVIDER) == expected


@pytest.mark.parametrize("parse", [openai.result_of, anthropic.result_of, ollama.result_of])
@pytest.mark.parametrize("data", [{}, {"choices": []}, {"content": "x"}, [], None, {"message": 3}])
def test_an_answer_of_the_wrong_shape_is_a_protocol_error(parse: Any, data: Any) -> None:
    with pytest.raises(UpstreamProtocolError) as err:
        parse(data, "m", PROVIDER)
    assert err.value.provider == PROVIDER and err.value.retryable


# -- what providers stream → neutral events -----------------------------------------------
STREAMS = [
    (
        openai.ChunkDecoder,
        "openai/stream-text.sse",
        [TextDelta("Hello"), TextDelta(", world"), Finish("stop", Usage(9, 3))],
    ),
    (
        openai.ChunkDecoder,
        "openai/stream-tools.sse",
        [
            ToolCallDelta(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", ""),
            ToolCallDelta(0, None, None, '{"location":'),
            ToolCallDelta(0, None, None, ' "Paris"}'),
            ToolCallDelta(1, "call_2", "get_time", "{}"),
            Finish("tool_calls", None),
        ],
    ),
    (
        anthropic.EventDecoder,
        "anthropic/stream-text-tool.sse",
        [
            TextDelta("Okay, let's check"),
            TextDelta(" the weather:"),
            ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", ""),
            ToolCallDelta(0, None, None, ""),
            ToolCallDelta(0, None, None, '{"location":'),
            ToolCallDelta(0, None, None, ' "San Francisco, CA"}'),
            Finish("tool_calls", Usage(472, 89)),
        ],
    ),
    (
        ollama.LineDecoder,
        "ollama/stream.ndjson",
        [
            TextDelta("The"),
            TextDelta(" sky"),
            TextDelta(" is blue"),
            Finish("length", Usage(61, 468)),
        ],
    ),
    (
        ollama.LineDecoder,
        "ollama/stream-tools.ndjson",
        [
            ToolCallDelta(0, OLLAMA_ID, "get_temperature", '{"city":"Toronto"}'),  # type: ignore[arg-type]
            Finish("tool_calls", Usage(40, 20)),
        ],
    ),
]


@pytest.mark.parametrize(("decoder", "name", "expected"), STREAMS, ids=[s[1] for s in STREAMS])
def test_streams_become_neutral_events(
    decoder: type[Decoder], name: str, expected: list[StreamEvent]
) -> None:
    assert decode(decoder(PROVIDER), name) == expected


STREAM_FAILURES = [
    (openai.ChunkDecoder, "openai/stream-cut.sse", UpstreamProtocolError, None, "before [DONE]"),
    (openai.ChunkDecoder, "openai/stream-error.sse", UpstreamStatusError, 500, "server had an"),
    (
        anthropic.EventDecoder,
        "anthropic/stream-overloaded.sse",
        UpstreamStatusError,
        529,
        "overloaded_error",
    ),
]


@pytest.mark.parametrize(
    ("decoder", "name", "error", "status", "text"),
    STREAM_FAILURES,
    ids=[s[1] for s in STREAM_FAILURES],
)
def test_a_broken_or_failing_stream_is_a_typed_upstream_error(
    decoder: type[Decoder], name: str, error: type[UpstreamError], status: int | None, text: str
) -> None:
    with pytest.raises(error) as err:
        decode(decoder(PROVIDER), name)
    assert err.value.upstream_status == status and err.value.retryable
    assert text in err.value.message


@pytest.mark.parametrize(
    "decoder", [openai.ChunkDecoder, anthropic.EventDecoder, ollama.LineDecoder]
)
def test_a_line_that_is_not_json_is_a_protocol_error(decoder: type[Decoder]) -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        decoder(PROVIDER).feed(
            b"data: {not json\n" if decoder is not ollama.LineDecoder else b"{x\n"
        )


# -- error bodies and model listings --------------------------------------------------------
ERRORS = [
    (openai.error_of, "openai/error-rate-limit.json", "rate_limit_exceeded", "Rate limit reached"),
    (openai.error_of, "openai/error-invalid.json", "invalid_request_error", "Invalid value"),
    (openai.error_of, "openai/error-vllm.json", "NotFoundError", "does not exist"),
    (anthropic.error_of, "anthropic/error-rate-limit.json", "rate_limit_error", "per-minute"),
    (ollama.error_of, "ollama/error.json", None, "try pulling it first"),
]


@pytest.mark.parametrize(("parse", "name", "kind", "text"), ERRORS, ids=[e[1] for e in ERRORS])
def test_error_bodies_give_type_and_message(parse: Any, name: str, kind: str, text: str) -> None:
    found_kind, message = parse((WIRE / name).read_bytes())
    assert found_kind == kind and text in message


@pytest.mark.parametrize("parse", [openai.error_of, anthropic.error_of, ollama.error_of])
def test_a_body_not_in_the_protocols_error_shape_gives_no_message(parse: Any) -> None:
    """Whatever answered was not the provider speaking its protocol: its page (a proxy's,
    another service's) says nothing a client may read."""
    for body in (
        b"<html>Bad Gateway</html>",
        b"",
        b'{"detail": "internal"}',
        b'["error"]',
        b'{"error": {"type": "x"}}',
    ):
        assert parse(body) == (None, None), body
    # Each protocol's own shape is read; another protocol's is not.
    assert openai.error_of(b'{"type": "error", "error": {"type": "x", "message": "m"}}') == (
        "x",
        "m",
    )
    assert anthropic.error_of(b'{"error": {"type": "x", "message": "m"}}') == (None, None)
    assert ollama.error_of(b'{"error": "model not found"}') == (None, "model not found")
    assert openai.error_of(b'{"error": "model not found"}') == (None, None)


def test_model_listings() -> None:
    assert openai.model_ids(body("openai/models.json"), PROVIDER) == ["gpt-4o", "gpt-4o-mini"]
    assert anthropic.model_ids(body("anthropic/models.json"), PROVIDER) == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5-20250929",
    ]
    assert ollama.model_names(body("ollama/tags.json"), PROVIDER) == [
        "llama3.2:latest",
        "smollm2:latest",
    ]


# -- a neutral request → each provider's body -----------------------------------------------
CONVERSATION = ChatRequest(
    system="Be brief.",
    messages=[
        Message("user", "Weather in Paris?"),
        Message(
            "assistant",
            "Let me look.",
            tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')],
        ),
        Message("tool", "18C and sunny", tool_call_id="call_1"),
        Message("user", "Thanks. And tomorrow?"),
    ],
    temperature=1.5,
    top_p=0.9,
    stop=["\n\n"],
    tools=[Tool("get_weather", "Current weather", {"type": "object", "properties": {}})],
    tool_choice={"name": "get_weather"},
    user="u-42",
)


def test_a_neutral_request_as_openai_sends_it() -> None:
    assert openai.request_body(CONVERSATION, "gpt-4o-mini", 100, "max_completion_tokens") == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "user", "content": "Thanks. And tomorrow?"},
        ],
        "max_completion_tokens": 100,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "user": "u-42",
    }


def test_a_neutral_request_as_anthropic_takes_it() -> None:
    assert anthropic.request_body(CONVERSATION, "claude-haiku-4-5", 100) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            # The tool result and the next question share one user turn.
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"},
                    {"type": "text", "text": "Thanks. And tomorrow?"},
                ],
            },
        ],
        "temperature": 1.0,  # Anthropic's range ends at 1
        "top_p": 0.9,
        "stop_sequences": ["\n\n"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {}},
            }
        ],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "metadata": {"user_id": "u-42"},
    }


def test_a_neutral_request_as_ollama_takes_it() -> None:
    assert ollama.request_body(CONVERSATION, "llama3.2", 100) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "18C and sunny"},
            {"role": "user", "content": "Thanks. And tomorrow?"},
        ],
        "options": {"num_predict": 100, "temperature": 1.5, "top_p": 0.9, "stop": ["\n\n"]},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
    }


@pytest.mark.parametrize(
    ("choice", "anthropic_choice", "ollama_tools"),
    [
        ("auto", {"type": "auto"}, True),
        ("required", {"type": "any"}, True),
        ("none", {"type": "none"}, False),
    ],
)
def test_tool_choices_across_protocols(
    choice: str, anthropic_choice: dict[str, str], ollama_tools: bool
) -> None:
    req = ChatRequest(messages=[Message("user", "x")], tools=CONVERSATION.tools, tool_choice=choice)
    assert openai.request_body(req, "m", 1, "max_tokens")["tool_choice"] == choice
    assert anthropic.request_body(req, "m", 1)["tool_choice"] == anthropic_choice
    assert ("tools" in ollama.request_body(req, "m", 1)) is ollama_tools


def test_tool_arguments_that_are_not_an_object_are_wrapped_not_lost() -> None:
    req = ChatRequest(
        messages=[
            Message(
                "assistant",
                "",
                tool_calls=[ToolCall("c", "f", "not json"), ToolCall("d", "g", "[1]")],
            )
        ]
    )
    blocks = anthropic.request_body(req, "m", 1)["messages"][0]["content"]
    assert [b["input"] for b in blocks] == [{"_raw": "not json"}, {"_value": [1]}]


# -- what clients send → neutral requests ----------------------------------------------------
def test_an_openai_client_request_becomes_neutral() -> None:
    sent = {
        "model": "auto",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather "},
                    {"type": "text", "text": "in Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "stop": "END",
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = openai.to_chat_request(openai.ChatBody.model_validate(sent), "docs")
    assert req.model is None and req.task_type == "docs"  # "auto": the router chooses
    assert req.system == "Be brief.\n\nAnswer in French."
    assert req.messages == [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=[ToolCall("call_1", "get_weather", "{}")]),
        Message("tool", "18C", tool_call_id="call_1"),
    ]
    assert req.max_tokens == 60 and req.stop == ["END"] and req.stream
    assert req.tools == [Tool("get_weather", "", {"type": "object", "properties": {}})]
    assert req.tool_choice == {"name": "get_weather"}


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        ([{"role": "user", "content": "   "}], "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "messages[0].content[0].type"),
        (
            [{"role": "user", "content": [{"type": "image_url"}]}],
            "messages[0].content[0].image_url",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
        ([{"role": "robot", "content": "hi"}], "messages[0].role"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c"}]}],
            "messages[0].tool_calls[0].function",
        ),
    ],
)
def test_openai_requests_that_cannot_be_served_name_the_field(
    messages: list[dict[str, Any]], field: str
) -> None:
    """Refused by the body's schema (as the OpenAPI document says) or, for what a schema
    states only in the document, by the translation; either way naming the field."""
    with pytest.raises(BadRequest) as err:
        openai.to_chat_request(
            validate(openai.ChatBody, {"model": "m", "messages": messages}), None
        )
    assert err.value.field == field


def test_an_anthropic_client_request_becomes_neutral() -> None:
    sent = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "18C"}],
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "stop_sequences": ["STOP"],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "metadata": {"user_id": "u-7"},
    }
    req = anthropic.to_chat_request(anthropic.MessagesBody.model_validate(sent), None)
    assert req.model == "claude-haiku-4-5" and req.system == "Be brief." and req.max_tokens == 64
    assert req.messages == [
        Message("user", "Weather in Paris?"),
        Message(
            "assistant",
            "Looking.",
            tool_calls=[ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')],
        ),
        Message("tool", "18C", tool_call_id="toolu_1"),
        Message("user", "Thanks"),
    ]
    assert req.stop == ["STOP"] and req.tool_choice == "required" and req.user == "u-7"


def test_openai_to_anthropic_keeps_a_tool_conversation_intact() -> None:
    """The same turns sent to an OpenAI surface reach an Anthropic provider as Anthropic
    would have them from its own SDK."""
    via_openai = openai.to_chat_request(
        openai.ChatBody.model_validate(
            {
                "model": "claude",
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "toolu_9", "function": {"name": "w", "arguments": '{"c":1}'}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "toolu_9", "content": "sunny"},
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "w", "parameters": {"type": "object"}},
                    }
                ],
            }
        ),
        None,
    )
    assert anthropic.request_body(via_openai, "claude-haiku-4-5", 10)["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "w", "input": {"c": 1}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"}],
        },
    ]


def test_stop_reasons_round_trip_through_the_neutral_form() -> None:
    for stop, neutral in anthropic.STOP_REASONS.items():
        assert anthropic.STOP_REASON_OF[neutral] in (stop, "end_turn", "max_tokens")
    for neutral in ("stop", "length", "tool_calls", "content_filter"):
        assert anthropic.STOP_REASONS[anthropic.STOP_REASON_OF[neutral]] == neutral  # type: ignore[index]
        assert openai.finish_reason(neutral) == neutral


# -- neutral answers → what each surface's clients receive ---------------------------------
DONE = Completed(
    ChatResult(
        "Sunny.",
        "tool_calls",
        Usage(30, 12),
        "up",
        tool_calls=[ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')],
    ),
    "claude",
    "anthropic",
    ZERO,
    Decimal(0),
    12.5,
    12.5,
    False,
    [],
)


def test_a_neutral_answer_for_each_surface() -> None:
    chat = openai.completion_json(DONE, "chatcmpl-1", 1700000000)
    assert chat["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "Sunny.",
            "refusal": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert chat["usage"] == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    message = anthropic.message_json(DONE, "msg_1")
    assert message["content"] == [
        {"type": "text", "text": "Sunny."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 30, "output_tokens": 12}
    brief = native.completion_json(DONE, "cmpl-1")
    assert brief["usage"] == {"promptTokens": 30, "completionTokens": 12, "totalTokens": 42}
    assert brief["finishReason"] == "tool_calls" and brief["cacheHit"] is False


class _Streamed:
    """What an encoder reads of a finished stream."""

    model = "claude"
    provider = "anthropic"
    usage = Usage(30, 12)
    cost = ZERO
    saved = Decimal(0)
    latency_ms = 20.0
    ttft_ms = 5.0
    cache_hit = False
    relayed = False
    cached = None
    broken = ()
    continued_from = ()


EVENTS: list[StreamEvent] = [
    TextDelta("Sun"),
    TextDelta("ny."),
    ToolCallDelta(0, "toolu_1", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city":'),
    ToolCallDelta(0, None, None, '"Paris"}'),
    Finish("tool_calls", Usage(30, 12)),
]


def encode(encoder: Any) -> bytes:
    out = encoder.open()
    for event in EVENTS:
        out += encoder.event(event)
    return bytes(out + encoder.close())


def sse(raw: bytes) -> list[tuple[str | None, Any]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        name = None
        data: Any = None
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:])
        events.append((name, data))
    return events


def test_openai_clients_receive_chunks_then_usage_then_done() -> None:
    enc = openai.ChunkEncoder(_Streamed(), "chatcmpl-1", 1, include_usage=True, headers={})  # type: ignore[arg-type]
    events = [data for _, data in sse(encode(enc))]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Sunny."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 42


def test_anthropic_clients_receive_the_real_event_sequence() -> None:
    enc = anthropic.EventEncoder(_Streamed(), "msg_1")  # type: ignore[arg-type]
    events = sse(encode(enc))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    # Nothing reported before the end: no estimate to contradict message_delta.
    assert events[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {},
    }
    assert [e[1]["index"] for e in events if e[0] == "content_block_stop"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 30, "output_tokens": 12}


def test_native_clients_receive_deltas_then_done() -> None:
    enc = native.EventEncoder(_Streamed(), "cmpl-1")  # type: ignore[arg-type]
    events = sse(encode(enc))
    assert [name for name, _ in events] == [
        "delta",
        "delta",
        "tool_call",
        "tool_call",
        "tool_call",
        "done",
    ]
    done = events[-1][1]
    assert done["finishReason"] == "tool_calls" and done["usage"]["totalTokens"] == 42
    assert done["performance"] == {"latencyMs": 20.0, "timeToFirstTokenMs": 5.0}


# -- relayed streams ------------------------------------------------------------------
def _chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    data = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


_USAGE = (
    b'data: {"id":"chatcmpl-up","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
)


def test_a_relay_passes_content_unread_and_reads_the_end() -> None:
    from switchyard.router.core.chat import Relayed
    from switchyard.router.protocols.openai import relay

    r = relay("p")
    stream = b"".join(
        [_chunk("Hel"), _chunk("lo"), _chunk(' "finish_reason":"x'), _chunk(None, "length")]
    )
    stream += _USAGE + b"data: [DONE]\n\n"
    cut = len(_chunk("Hel")) + 5  # a block ends inside an event
    first = r.feed(stream[:cut])
    assert [type(e) for e in first] == [Relayed] and first[0].data == _chunk("Hel")  # type: ignore[union-attr]
    rest = r.feed(stream[cut:])
    relayed, finish = rest
    assert isinstance(relayed, Relayed) and isinstance(finish, Finish)
    assert first[0].data + relayed.data == stream  # type: ignore[union-attr]
    # Only the block holding the end marker says that nothing follows it.
    assert relayed.last and not first[0].last  # type: ignore[union-attr]
    assert finish.reason == "length" and finish.usage == Usage(7, 3)
    assert relayed.usage is not None
    a, b = relayed.usage
    assert relayed.data[a:b] == _USAGE
    assert r.done


def test_a_relay_passes_what_came_before_an_error_then_raises_it() -> None:
    from switchyard.router.protocols.openai import relay

    r = relay("p")
    error = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    out = r.feed(_chunk("Hi") + error)
    assert len(out) == 1 and out[0].data == _chunk("Hi")  # type: ignore[union-attr]
    assert r.failure is not None and "overloaded" in r.failure.message


def test_a_relay_stops_at_an_event_that_is_not_json() -> None:
    from switchyard.router.protocols.openai import relay

    r = relay("p")
    out = r.feed(_chunk("Hi") + b'data: {"id": "chatcmpl-up", "choi\n\n' + _chunk("there"))
    assert len(out) == 1 and out[0].data == _chunk("Hi")  # type: ignore[union-attr]
    assert r.failure is not None and r.failure.code == "upstream_protocol_error"
    r = relay("p")
    assert r.feed(b"data: garbage\n\n") == [] and r.failure is not None
    r = relay("p")
    assert r.feed(b": keep-alive\n\n" + _chunk("ok"))[0].data.endswith(_chunk("ok"))  # type: ignore[union-attr]
    assert r.failure is None


def test_a_relay_estimates_text_for_a_provider_that_reports_no_usage() -> None:
    from switchyard.router.protocols.openai import relay

    r = relay("p")
    out = r.feed(b"".join(_chunk("word ") for _ in range(10)))
    assert out[0].text_bytes == 50  # type: ignore[union-attr]


def test_a_relays_text_estimate_is_not_thrown_by_a_first_event_that_names_the_role() -> None:
    """OpenAI, vLLM and llama.cpp put ``"role":"assistant"`` in the first chunk only: an
    envelope measured on it alone counted most later deltas (shorter than the role's 19
    bytes) as no text at all, whether the stream came in one block or one per event."""
    from switchyard.router.protocols.openai import relay

    words = [f"w{i} " for i in range(40)]  # 3 or 4 bytes each
    first = _chunk(words[0]).replace(b'"delta":{', b'"delta":{"role":"assistant",')
    events = [first, *(_chunk(w) for w in words[1:])]
    text = sum(len(w) for w in words)
    per_event = relay("p")
    counted = sum(
        e.text_bytes  # type: ignore[union-attr]
        for event in events
        for e in per_event.feed(event)
    )
    assert counted == text
    whole = relay("p").feed(b"".join(events))
    # In one block the first event is measured with the later ones' smaller envelope.
    assert text <= whole[0].text_bytes <= text + len(b'"role":"assistant",')  # type: ignore[union-attr]


def test_a_stream_relayed_a_read_per_event_is_read_as_in_one_block() -> None:
    """Reads of one whole event each (the relay's quick path) give the bytes, text,
    usage and finish the same stream gives in one read; a read that ends an event begun
    in the one before joins it, whatever it looks like."""
    from switchyard.router.core.chat import Relayed
    from switchyard.router.protocols.openai import relay

    events = [_chunk("Hel"), _chunk("lo"), _chunk(None, "stop"), _USAGE, b"data: [DONE]\n\n"]
    per_read = relay("p")
    out = [e for event in events for e in per_read.feed(event)]
    whole = relay("p").feed(b"".join(events))
    relayed = [e for e in out if type(e) is Relayed]
    assert b"".join(e.data for e in relayed) == whole[0].data == b"".join(events)  # type: ignore[union-attr]
    assert sum(e.text_bytes for e in relayed) == whole[0].text_bytes  # type: ignore[union-attr]
    assert [e for e in out if type(e) is not Relayed] == whole[1:]
    assert [e.usage for e in relayed if e.data == _USAGE] == [(0, len(_USAGE))]
    assert per_read.done
    split = relay("p")
    event = _chunk("split")
    cut = event.index(b'"model"')
    assert split.feed(event[:cut]) == []
    assert split.feed(event[cut:])[0].data == event  # type: ignore[union-attr]


def test_crlf_streams_are_relayed_as_lf() -> None:
    from switchyard.router.protocols.openai import relay

    r = relay("p")
    out = r.feed(_chunk("a").replace(b"\n", b"\r\n"))
    assert out[0].data == _chunk("a")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        (b'data: {"id":"a","model":"m"}\n\n', ("a", "m")),
        (b': ping\n\ndata: {"x":1}\n\ndata: {"id":"b","model":"n"}\n\n', ("b", "n")),
        (b'event: x\ndata: {"id":"d","model":"p"}\n\n', ("d", "p")),
        (b'data: {broken\ndata: {"id":"c","model":"o"}', ("c", "o")),
        (b'data: {"id":"","model":"m"}\n\n', None),
        (b'data: {"id":"a"', None),
        (b'data: {"content":"data: {\\"id\\":\\"x\\",\\"model\\":\\"y\\"}"}\n\n', None),
        (b"data: [DONE]\n\n", None),
        (b"", None),
    ],
)
def test_a_relayed_streams_ids_are_read_from_its_first_event_naming_both(
    data: bytes, ids: tuple[str, str] | None
) -> None:
    assert openai.stream_ids(data) == ids
