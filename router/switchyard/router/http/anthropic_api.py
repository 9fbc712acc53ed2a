"""Anthropic-compatible surface: ``POST /v1/messages``, streaming with the real event sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from switchyard.router.core.chat import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    estimate_tokens,
)
from switchyard.router.core.pipeline import RequestInfo, Streaming
from switchyard.router.errors import BadRequest, SwitchyardError
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.errors import error_body
from switchyard.router.http.native import REQUEST_ID, SSE_HEADERS, task_header
from switchyard.router.http.openai_api import AUTO_MODELS
from switchyard.router.http.services import services

STOP_REASON: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class Block(_Loose):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[TextPart] | None = None


class AnthropicMessage(_Loose):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(_Loose):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolChoice(_Loose):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class MessagesBody(_Loose):
    model: str = Field(min_length=1, max_length=253)
    max_tokens: int = Field(ge=1, le=1_000_000)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=10_000)
    system: str | list[TextPart] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None


def to_chat_request(body: MessagesBody, task: str | None) -> ChatRequest:
    messages: list[Message] = []
    for i, m in enumerate(body.messages):
        if isinstance(m.content, str):
            messages.append(Message(m.role, m.content))
            continue
        text: list[str] = []
        calls: list[ToolCall] = []
        for j, b in enumerate(m.content):
            where = f"messages[{i}].content[{j}]"
            if b.type == "text":
                text.append(b.text or "")
            elif b.type == "tool_use" and m.role == "assistant":
                calls.append(
                    ToolCall(
                        b.id or f"toolu_{j}", b.name or "", orjson.dumps(b.input or {}).decode()
                    )
                )
            elif b.type == "tool_result" and m.role == "user":
                result = b.content
                if isinstance(result, list):
                    result = "".join(p.text for p in result)
                messages.append(Message("tool", result or "", tool_call_id=b.tool_use_id))
            else:
                raise BadRequest(
                    f"{where}: content blocks of type {b.type!r} are not supported here",
                    field=f"{where}.type",
                )
        if text or calls:
            messages.append(Message(m.role, "".join(text), tool_calls=calls))
    system = body.system
    if isinstance(system, list):
        system = "\n\n".join(p.text for p in system)
    choice: str | dict[str, Any] | None = None
    if body.tool_choice is not None:
        t = body.tool_choice.type
        if t == "tool":
            if not body.tool_choice.name:
                raise BadRequest(
                    "tool_choice.name is required for type 'tool'", field="tool_choice"
                )
            choice = {"name": body.tool_choice.name}
        else:
            choice = {"auto": "auto", "any": "required", "none": "none"}[t]
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
    )


def _input(arguments: str) -> Any:
    try:
        return orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}


async def messages(request: Request) -> Response:
    info = RequestInfo("anthropic", request.headers.get("cache-control"))
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    body = validate(MessagesBody, await read_json(request, catalog.settings.max_body_bytes))
    req = to_chat_request(body, task_header(request))
    message_id = f"msg_{info.id.replace('-', '')}"
    if req.stream:
        streaming = await s.serve.stream(caller, req, info)
        return StreamingResponse(
            _stream(streaming, message_id, estimate_tokens(req.text_size())),
            media_type="text/event-stream",
            headers=SSE_HEADERS | {REQUEST_ID: info.id},
            background=BackgroundTask(streaming.close),
        )
    done = await s.serve.complete(caller, req, info)
    r = done.result
    content: list[dict[str, Any]] = []
    if r.content or not r.tool_calls:
        content.append({"type": "text", "text": r.content})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
        for c in r.tool_calls
    ]
    payload = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": done.model,
        "content": content,
        "stop_reason": STOP_REASON[r.finish_reason],
        "stop_sequence": None,
        "usage": {
            "input_tokens": r.usage.prompt_tokens,
            "output_tokens": r.usage.completion_tokens,
        },
    }
    return Response(
        orjson.dumps(payload), media_type="application/json", headers={REQUEST_ID: info.id}
    )


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _stream(
    streaming: Streaming, message_id: str, input_estimate: int
) -> AsyncIterator[bytes]:
    dumps = orjson.dumps
    yield _event(
        b"message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": streaming.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_estimate, "output_tokens": 1},
            },
        },
    )
    block = -1  # index of the open content block
    open_kind: str | None = None
    tool_blocks: dict[int, int] = {}  # tool call index -> block index
    text_prefix = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
    reason: FinishReason = "stop"
    try:
        async for event in streaming.events():
            if type(event) is TextDelta:
                if open_kind != "text":
                    if open_kind is not None:
                        yield _event(
                            b"content_block_stop", {"type": "content_block_stop", "index": block}
                        )
                    block += 1
                    open_kind = "text"
                    yield _event(
                        b"content_block_start",
                        {
                            "type": "content_block_start",
                            "index": block,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                    if block == 0:
                        yield _event(b"ping", {"type": "ping"})
                yield (
                    text_prefix
                    + str(block).encode()
                    + b',"delta":{"type":"text_delta","text":'
                    + dumps(event.text)
                    + b"}}\n\n"
                )
            elif isinstance(event, ToolCallDelta):
                if event.index not in tool_blocks:
                    if open_kind is not None:
                        yield _event(
                            b"content_block_stop", {"type": "content_block_stop", "index": block}
                        )
                    block += 1
                    open_kind = "tool"
                    tool_blocks[event.index] = block
                    yield _event(
                        b"content_block_start",
                        {
                            "type": "content_block_start",
                            "index": block,
                            "content_block": {
                                "type": "tool_use",
                                "id": event.id or f"toolu_{block}",
                                "name": event.name or "",
                                "input": {},
                            },
                        },
                    )
                if event.arguments:
                    yield _event(
                        b"content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": tool_blocks[event.index],
                            "delta": {"type": "input_json_delta", "partial_json": event.arguments},
                        },
                    )
            elif isinstance(event, Finish):
                reason = event.reason
    except SwitchyardError as exc:
        yield _event(b"error", error_body(exc, "anthropic"))
        return
    if open_kind is None:
        block = 0
        yield _event(
            b"content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    yield _event(b"content_block_stop", {"type": "content_block_stop", "index": block})
    yield _event(
        b"message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASON[reason], "stop_sequence": None},
            "usage": {
                "input_tokens": streaming.usage.prompt_tokens,
                "output_tokens": streaming.usage.completion_tokens,
            },
        },
    )
    yield _event(b"message_stop", {"type": "message_stop"})
