"""Anthropic's Messages protocol, both ways.

Inbound: the Anthropic-compatible surface (``POST /v1/messages``) with the real
streaming event sequence, so the official anthropic SDK works unchanged. Outbound:
Anthropic's API (``baseUrl`` as the anthropic SDK takes it).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.config import JsonDict

from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    FinishReason,
    Image,
    Message,
    Relayed,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.errors import BadRequest, UpstreamProtocolError, UpstreamStatusError
from switchyard.router.protocols.openai import AUTO_MODELS
from switchyard.router.protocols.shared import (
    Integral,
    arguments_object,
    arguments_or_empty,
    error_json,
)
from switchyard.router.protocols.sse import EventRelay, Renamer, named

if TYPE_CHECKING:
    from switchyard.router.core.accounting import Completed
    from switchyard.router.core.streaming import Streaming

VERSION = "2023-06-01"  # the anthropic-version header Switchyard speaks

#: Anthropic's ``stop_reason`` → the neutral one.
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
#: The neutral finish reason → Anthropic's ``stop_reason``.
STOP_REASON_OF: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}
#: The HTTP status Anthropic uses for each error type (inside a stream there is none).
ERROR_STATUS = {
    "overloaded_error": 529,
    "api_error": 500,
    "rate_limit_error": 429,
    "invalid_request_error": 400,
}


def _prompt_tokens(u: dict[str, Any]) -> int:
    """Anthropic counts cached prompt tokens apart; they are prompt tokens all the same."""
    return (
        int(u.get("input_tokens") or 0)
        + int(u.get("cache_read_input_tokens") or 0)
        + int(u.get("cache_creation_input_tokens") or 0)
    )


_NOT_IN_IDS = re.compile(r"[^A-Za-z0-9_-]")
_BETA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: How many betas one request may name.
MAX_BETAS = 32


def betas_of(header: str | None) -> list[str]:
    """The features an ``anthropic-beta`` header names (comma-separated, as the SDK
    joins its ``betas``), each once."""
    if not header:
        return []
    names = [b.strip() for b in header.split(",") if b.strip()]
    if len(names) > MAX_BETAS:
        raise BadRequest(
            f"anthropic-beta: at most {MAX_BETAS} betas may be named", field="anthropic-beta"
        )
    for name in names:
        if not _BETA_NAME.match(name):
            raise BadRequest(
                f"anthropic-beta: {name[:80]!r} is not a beta's name", field="anthropic-beta"
            )
    return list(dict.fromkeys(names))


def tool_use_id(call_id: str | None) -> str:
    """A tool call's id as Anthropic shapes them: ``toolu_`` and letters, digits, ``_``,
    ``-``. Another provider's id (``call_…``) keeps its text after the prefix, so a
    call and its result, mapped alike, still match."""
    if not call_id:
        return f"toolu_{uuid.uuid4().hex[:24]}"
    if call_id.startswith("toolu_") and not _NOT_IN_IDS.search(call_id):
        return call_id
    return "toolu_" + _NOT_IN_IDS.sub("_", call_id.removeprefix("toolu_"))


def _upstream_id(call_id: str | None) -> str:
    """A history's tool call id as Anthropic accepts it (its pattern, nothing more), so a
    call and its result, mapped alike, still match."""
    return _NOT_IN_IDS.sub("_", call_id) if call_id else tool_use_id(None)


# -- inbound: the request a client sends ------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Block(BaseModel):
    """A message, a content block or an image source: fields Anthropic's API does not
    know are refused by name, as Anthropic refuses them. They would otherwise be kept
    in a thread and sent on, while counting for nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Block):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None
    citations: list[Any] | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str | None = None
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    cache_control: dict[str, Any] | None = None
    caller: dict[str, Any] | None = None
    toolset_name: str | None = None


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextPart] | None = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None
    toolset_name: str | None = None


class Base64Source(_Block):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class URLSource(_Block):
    type: Literal["url"]
    url: str = Field(min_length=1, pattern=r"^https?://")


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    cache_control: dict[str, Any] | None = None
    transformations: dict[str, Any] | None = None


class ThinkingBlock(_Block):
    """The model's own reasoning, which a conversation hands back to Anthropic as it
    came; other providers have no use for it and do not get it."""

    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


#: The blocks the neutral request can carry: text both ways, images from the user, tool
#: calls from the assistant, their results from the user; thinking blocks go back to
#: Anthropic as sent.
UserBlock = Annotated[TextPart | ImageBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextPart | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]


class UserMessage(_Block):
    role: Literal["user"]
    content: Annotated[str, Field(min_length=1)] | Annotated[list[UserBlock], Field(min_length=1)]


class AssistantMessage(_Block):
    role: Literal["assistant"]
    content: (
        Annotated[str, Field(min_length=1)] | Annotated[list[AssistantBlock], Field(min_length=1)]
    )


AnthropicMessage = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class ToolDef(_Loose):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ChoiceAuto(_Loose):
    type: Literal["auto", "any", "none"]


class ChoiceTool(_Loose):
    type: Literal["tool"]
    name: str = Field(min_length=1)


ToolChoice = Annotated[ChoiceAuto | ChoiceTool, Field(discriminator="type")]


class ThreadCreate(_Loose):
    type: Literal["create"]


class ThreadContinue(_Loose):
    type: Literal["continue"]
    previous_message_id: str = Field(min_length=1, max_length=128)


#: A message thread (beta ``message-threads-2026-08-12``): the conversation held under
#: each answer's id, so the next request sends only its new turn; the system prompt and
#: tools it was created with are held too (the SDK sends them only on ``create``).
#: Switchyard holds it (``core.conversations``) for every provider, so a thread survives
#: failover.
Thread = Annotated[ThreadCreate | ThreadContinue, Field(discriminator="type")]
_MESSAGES: TypeAdapter[list[AnthropicMessage]] = TypeAdapter(list[AnthropicMessage])
_SYSTEM: TypeAdapter[str | list[TextPart] | None] = TypeAdapter(str | list[TextPart] | None)
_TOOLS: TypeAdapter[list[ToolDef] | None] = TypeAdapter(list[ToolDef] | None)
#: What a thread holds from the request that created it, and a ``continue`` may not send.
THREAD_FIELDS = ("system", "tools")


def continue_thread(
    body: MessagesBody,
    items: list[list[Any]],
    answers: list[dict[str, Any]],
    context: dict[str, Any] | None,
    new: list[Any],
) -> list[Any]:
    """The whole conversation of a continued thread: each held turn and the answer it
    got, then the request's own turn; the system prompt and tools the thread holds.
    ``body`` takes them; the conversation is returned as JSON."""
    whole: list[Any] = []
    for own, answer in zip(items, answers, strict=True):
        whole += own
        whole.append({"role": "assistant", "content": answer.get("content", [])})
    whole += new
    try:
        body.messages = _MESSAGES.validate_python(whole)
        for name in THREAD_FIELDS:
            if context and name in context:
                adapter = _SYSTEM if name == "system" else _TOOLS
                setattr(body, name, adapter.validate_python(context[name]))
    except ValidationError as exc:  # held by an older version, or not a thread
        raise BadRequest(
            "thread.previous_message_id: that message cannot be continued here",
            field="thread.previous_message_id",
        ) from exc
    return whole


#: A continuing thread turn sends neither ``system`` nor ``tools`` (the thread holds
#: them), as JSON Schema for the OpenAPI document.
_CONTINUE_HOLDS: JsonDict = {
    "if": {
        "required": ["thread"],
        "properties": {
            "thread": {"required": ["type"], "properties": {"type": {"const": "continue"}}}
        },
    },
    "then": {"properties": {name: {"type": "null"} for name in ("system", "tools")}},
}


class MessagesBody(_Loose):
    """Fields it does not name are kept (``model_extra``) and forwarded as sent."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_CONTINUE_HOLDS)

    model: str = Field(min_length=1, max_length=253)
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), Integral]
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=10_000)
    system: str | list[TextPart] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    thread: Thread | None = None


class CountTokensBody(MessagesBody):
    """``POST /v1/messages/count_tokens``: a Messages body without ``max_tokens``."""

    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), Integral] | None = None  # type: ignore[assignment]


def to_chat_request(body: MessagesBody, task: str | None) -> ChatRequest:
    messages: list[Message] = []
    hidden = 0
    for m in body.messages:
        if isinstance(m.content, str):
            messages.append(Message(m.role, m.content))
            continue
        text: list[str] = []
        calls: list[ToolCall] = []
        images: list[Image] = []
        for b in m.content:
            if isinstance(b, TextPart):
                text.append(b.text)
            elif isinstance(b, ImageBlock):
                src = b.source
                images.append(
                    Image(src.media_type, data=src.data)
                    if isinstance(src, Base64Source)
                    else Image("", url=src.url)
                )
            elif isinstance(b, ThinkingBlock):
                hidden += len(b.thinking.encode()) + len(b.signature)
            elif isinstance(b, RedactedThinkingBlock):
                hidden += len(b.data)
            elif isinstance(b, ToolUseBlock):
                calls.append(
                    ToolCall(b.id or tool_use_id(None), b.name, orjson.dumps(b.input).decode())
                )
            else:
                result = b.content
                if isinstance(result, list):
                    result = "".join(p.text for p in result)
                messages.append(Message("tool", result or "", tool_call_id=b.tool_use_id))
        if text or calls or images:
            messages.append(Message(m.role, "".join(text), tool_calls=calls, images=images))
    system = body.system
    if isinstance(system, list):
        system = "\n\n".join(p.text for p in system)
    choice: str | dict[str, Any] | None = None
    if isinstance(body.tool_choice, ChoiceTool):
        choice = {"name": body.tool_choice.name}
    elif body.tool_choice is not None:
        choice = {"auto": "auto", "any": "required", "none": "none"}[body.tool_choice.type]
    user = (body.metadata or {}).get("user_id")
    return ChatRequest(
        messages=messages,
        system=system or None,
        model=None if body.model in AUTO_MODELS else body.model,
        task_type=task,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=list(body.stop_sequences or ()),
        stream=body.stream,
        tools=[Tool(t.name, t.description, t.input_schema) for t in body.tools or ()],
        tool_choice=choice,
        user=str(user) if user is not None else None,
        params=dict(body.model_extra or {}),
        params_protocol="anthropic",
        hidden_bytes=hidden,
    )


# -- inbound: the answer a client receives ------------------------------------------------
def content_blocks(r: ChatResult) -> list[dict[str, Any]]:
    """An answer's ``content``: its text, then its tool calls."""
    content: list[dict[str, Any]] = []
    if r.content or not r.tool_calls:
        content.append({"type": "text", "text": r.content})
    content += [
        {
            "type": "tool_use",
            "id": tool_use_id(c.id),
            "name": c.name,
            "input": arguments_or_empty(c.arguments),
        }
        for c in r.tool_calls
    ]
    return content


def message_json(done: Completed, message_id: str) -> dict[str, Any]:
    """A ``message`` object."""
    r = done.result
    content = content_blocks(r)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": done.model,
        "content": content,
        "stop_reason": STOP_REASON_OF[r.finish_reason],
        "stop_sequence": None,
        "usage": {
            "input_tokens": r.usage.prompt_tokens,
            "output_tokens": r.usage.completion_tokens,
        },
    }


#: A text delta's event up to its text, for the block whose index it is formatted with.
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":'
)
_DELTA_END = b"}}\n\n"


class EventEncoder:
    """Neutral events → Anthropic's event sequence: message_start, content blocks
    (start, deltas, stop), message_delta, message_stop."""

    def __init__(self, streaming: Streaming, message_id: str) -> None:
        self.headers: dict[str, str] = {}
        self.streaming = streaming
        #: The provider's own events, relayed (same protocol): only id and model change.
        self.relayed = streaming.relayed
        self.rename = Renamer(message_id, streaming.model)
        self.message_id = message_id
        self.block = -1  # index of the open content block
        self.open_kind: str | None = None
        #: A text delta's event up to its text, for the open text block (``_start``).
        self.text_delta = b""
        self.tool_blocks: dict[int, int] = {}  # tool call index -> block index
        self.reason: FinishReason = "stop"

    def open(self) -> bytes:
        if self.relayed:
            return b""
        return named(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.streaming.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    # What the provider reported so far: nothing until message_delta
                    # (an answer from the cache knows it already). No estimate.
                    "usage": {"input_tokens": self._known_input(), "output_tokens": 0},
                },
            },
        )

    def _known_input(self) -> int:
        cached = self.streaming.cached
        return cached.usage.prompt_tokens if cached is not None else 0

    def _start(self, kind: str, content_block: dict[str, Any]) -> bytes:
        out = b""
        if self.open_kind is not None:
            out = named(b"content_block_stop", {"type": "content_block_stop", "index": self.block})
        self.block += 1
        self.open_kind = kind
        if kind == "text":
            self.text_delta = _TEXT_DELTA % self.block
        return out + named(
            b"content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": content_block},
        )

    def event(self, event: StreamEvent) -> bytes:
        if type(event) is Relayed:
            return self.rename(event.data, stream_ids)
        if type(event) is TextDelta:
            if self.open_kind == "text":
                return self.text_delta + orjson.dumps(event.text) + _DELTA_END
            out = self._start("text", {"type": "text", "text": ""})
            if self.block == 0:
                out += named(b"ping", {"type": "ping"})
            return out + self.text_delta + orjson.dumps(event.text) + _DELTA_END
        if isinstance(event, ToolCallDelta):
            out = b""
            if event.index not in self.tool_blocks:
                out = self._start(
                    "tool",
                    {
                        "type": "tool_use",
                        "id": tool_use_id(event.id),
                        "name": event.name or "",
                        "input": {},
                    },
                )
                self.tool_blocks[event.index] = self.block
            if event.arguments:
                out += named(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.tool_blocks[event.index],
                        "delta": {"type": "input_json_delta", "partial_json": event.arguments},
                    },
                )
            return out
        if isinstance(event, Finish):
            self.reason = event.reason
        return b""

    def error(self, body: dict[str, Any]) -> bytes:
        return named(b"error", body)

    def close(self) -> bytes:
        if self.relayed:
            return b""  # the provider's message_stop was relayed
        out = b""
        if self.open_kind is None:
            self.block = 0
            out = named(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        usage = self.streaming.usage
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASON_OF[self.reason], "stop_sequence": None},
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            },
        }
        if self.streaming.broken:
            delta["switchyard"] = {"continued_from": self.streaming.continued_from}
        return (
            out
            + named(b"content_block_stop", {"type": "content_block_stop", "index": self.block})
            + named(b"message_delta", delta)
            + named(b"message_stop", {"type": "message_stop"})
        )


# -- outbound: what Switchyard sends Anthropic ------------------------------------------
def messages_of(messages: list[Message]) -> list[dict[str, Any]]:
    """Anthropic wants alternating turns, tool results inside user turns."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            role = "user"
            blocks: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": _upstream_id(m.tool_call_id),
                    "content": m.content,
                }
            ]
        elif m.tool_calls:
            role = "assistant"
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {
                    "type": "tool_use",
                    "id": _upstream_id(c.id),
                    "name": c.name,
                    "input": arguments_object(c.arguments),
                }
                for c in m.tool_calls
            ]
        else:
            role = m.role
            # Images first, as Anthropic advises, then the text.
            blocks = [_image_block(i) for i in m.images]
            if m.content or not blocks:
                blocks.append({"type": "text", "text": m.content})
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    # Plain single text blocks read better upstream as strings.
    for turn in out:
        c = turn["content"]
        if len(c) == 1 and c[0]["type"] == "text":
            turn["content"] = c[0]["text"]
    return out


def _image_block(image: Image) -> dict[str, Any]:
    if image.url:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.media_type, "data": image.data},
    }


def request_body(req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
    raw = req.raw_messages is not None and req.params_protocol == "anthropic"
    body: dict[str, Any] = {
        "model": model_name,
        "max_tokens": max_tokens,
        # The client's own conversation when it spoke this protocol (see ChatRequest).
        "messages": req.raw_messages if raw else messages_of(req.messages),
    }
    if raw and req.raw_system is not None:
        body["system"] = req.raw_system
    elif req.system:
        body["system"] = req.system
    if req.prefill and body["messages"] and body["messages"][-1]["role"] == "assistant":
        # The answer so far, continued by the model (prefill); Anthropic refuses a final
        # assistant turn that ends in whitespace.
        last = body["messages"][-1]
        if isinstance(last.get("content"), str):
            last["content"] = last["content"].rstrip()
    if req.temperature is not None:
        # Anthropic's range is 0..1; OpenAI's is 0..2.
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.tools:
        # Tools stay even when none may be called: a conversation holding
        # tool_use blocks must declare them.
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in req.tools
        ]
        choice = req.tool_choice
        if choice == "none":
            body["tool_choice"] = {"type": "none"}
        elif choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif isinstance(choice, dict):
            body["tool_choice"] = {"type": "tool", "name": choice["name"]}
        elif choice == "auto":
            body["tool_choice"] = {"type": "auto"}
        if req.params_protocol == "openai" and req.params.get("parallel_tool_calls") is False:
            # OpenAI's parallel_tool_calls: false is Anthropic's disable_parallel_tool_use.
            tool_choice = body.setdefault("tool_choice", {"type": "auto"})
            if tool_choice["type"] != "none":
                tool_choice["disable_parallel_tool_use"] = True
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.params_protocol == "openai":
        fmt = req.params.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            # OpenAI's structured output is Anthropic's output_config.format; the answer
            # is the JSON as text on both (contract.TRANSLATED holds which ones qualify).
            schema = fmt["json_schema"]["schema"]
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if req.params and req.params_protocol == "anthropic":
        # The client's other fields (thinking, top_k, ...), as sent.
        body = req.params | body
    return body


# -- outbound: what Anthropic answers ---------------------------------------------------
def input_tokens(data: Any, provider: str) -> int:
    """``count_tokens``' answer: ``{"input_tokens": N}``."""
    value = data.get("input_tokens") if isinstance(data, dict) else None
    if not isinstance(value, int) or value < 0:
        raise UpstreamProtocolError("count_tokens answered no input_tokens", provider=provider)
    return value


def result_of(data: Any, model_name: str, provider: str) -> ChatResult:
    """A ``message`` object → the neutral result."""
    try:
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in data["content"]:
            if block["type"] == "text":
                text.append(block["text"])
            elif block["type"] == "tool_use":
                calls.append(
                    ToolCall(block["id"], block["name"], orjson.dumps(block["input"]).decode())
                )
        usage = data.get("usage") or {}
        return ChatResult(
            content="".join(text),
            finish_reason=STOP_REASONS.get(data.get("stop_reason") or "", "stop"),
            usage=Usage(_prompt_tokens(usage), int(usage.get("output_tokens") or 0)),
            upstream_model=str(data.get("model") or model_name),
            tool_calls=calls,
            upstream_id=data.get("id"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(
            f"unexpected message shape: missing {exc}", provider=provider
        ) from None


class EventDecoder:
    """Anthropic's SSE lines → neutral events; ``done`` once ``message_stop`` was read."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.reason: FinishReason = "stop"
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.done = False

    def feed(self, line: bytes) -> list[StreamEvent]:
        if not line.startswith(b"data:"):
            return []  # "event:" lines repeat the type that the data carries
        try:
            event = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "a stream event is not JSON", provider=self.provider
            ) from None
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                return [TextDelta(delta["text"])]
            if delta.get("type") == "input_json_delta":
                idx = self.tool_index.get(event.get("index", 0), 0)
                return [ToolCallDelta(idx, None, None, delta.get("partial_json", ""))]
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = len(self.tool_index)
                self.tool_index[event.get("index", 0)] = idx
                return [ToolCallDelta(idx, block.get("id"), block.get("name"), "")]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
        elif kind == "message_start":
            u = (event.get("message") or {}).get("usage") or {}
            self.prompt_tokens = _prompt_tokens(u)
            self.output_tokens = int(u.get("output_tokens") or 0)
        elif kind == "message_delta":
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop:
                self.reason = STOP_REASONS.get(stop, "stop")
            u = event.get("usage") or {}
            if "output_tokens" in u:
                self.output_tokens = int(u["output_tokens"])
            if u.get("input_tokens"):
                self.prompt_tokens = int(u["input_tokens"])
        elif kind == "message_stop":
            self.done = True
            return [Finish(self.reason, Usage(self.prompt_tokens, self.output_tokens))]
        elif kind == "error":
            err = event.get("error") or {}
            etype = err.get("type")
            raise UpstreamStatusError(
                f"error in stream: {etype}: {str(err.get('message', ''))[:300]}",
                provider=self.provider,
                upstream_status=ERROR_STATUS.get(str(etype), 500),
                upstream_type=etype,
            )
        return []

    def incomplete(self) -> UpstreamProtocolError:
        return UpstreamProtocolError("the stream ended before message_stop", provider=self.provider)


#: The events a relay reads (see ``sse.EventRelay``): usage and the end, or an error.
_RELAY_MARKS = tuple(
    f'"type":{sep}"{kind}"'.encode()
    for kind in ("message_start", "message_delta", "message_stop", "error")
    for sep in ("", " ")
)


def _delta_text(event: Any) -> str:
    delta = event.get("delta") or {}
    return str(delta.get("text") or delta.get("partial_json") or "")


def relay(provider: str) -> EventRelay:
    """A provider's SSE bytes → ``Relayed`` blocks as sent, for an Anthropic client."""
    return EventRelay(EventDecoder(provider), _RELAY_MARKS, lambda _event: False, _delta_text)


def stream_ids(data: bytes) -> tuple[str, str] | None:
    """The message id and model that ``message_start`` names, if ``data`` holds it."""
    at = data.find(b"message_start")
    if at < 0:
        return None
    for line in data[at:].split(b"\n"):
        if line.startswith(b"data:"):
            try:
                message = orjson.loads(line[5:]).get("message") or {}
            except (orjson.JSONDecodeError, AttributeError):
                return None
            if message.get("id") and message.get("model"):
                return str(message["id"]), str(message["model"])
            return None
    return None


def error_of(body: bytes) -> tuple[str | None, str | None]:
    """The error type and message of an error body in Anthropic's shape, ``{"type":
    "error", "error": {"type", "message"}}``; no message when it is not."""
    data = error_json(body)
    if isinstance(data, str) or data.get("type") != "error":
        return None, None
    err = data.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        kind = err.get("type")
        return (str(kind) if kind else None), err["message"]
    return None, None


def model_ids(data: Any, provider: str) -> list[str]:
    """``GET /v1/models`` → the model ids."""
    try:
        return sorted(str(m["id"]) for m in data["data"])
    except (KeyError, TypeError):
        raise UpstreamProtocolError("unexpected model list shape", provider=provider) from None
