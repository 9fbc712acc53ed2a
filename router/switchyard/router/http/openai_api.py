"""OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The official openai SDK works against it unchanged, streaming included. The
``model`` is a model name from the table, or ``auto`` to let the router
choose (the task type then comes from the ``X-Switchyard-Task`` header).
"""

from __future__ import annotations

import time
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
    Message,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from switchyard.router.core.pipeline import RequestInfo, Streaming
from switchyard.router.errors import BadRequest, SwitchyardError
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.errors import error_body
from switchyard.router.http.native import REQUEST_ID, SSE_HEADERS, task_header
from switchyard.router.http.services import services

AUTO_MODELS = frozenset({"auto", "switchyard", "switchyard-auto"})


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Loose):
    type: str
    text: str | None = None


class FunctionCall(_Loose):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Loose):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(_Loose):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatBody(_Loose):
    model: str = Field(min_length=1, max_length=253)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    user: str | None = None


def _text(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    out = []
    for i, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise BadRequest(
                f"{where}.content[{i}]: content of type {part.type!r} is not supported; send text",
                field=f"{where}.content[{i}].type",
            )
        out.append(part.text)
    return "".join(out)


def to_chat_request(body: ChatBody, task: str | None) -> ChatRequest:
    system: list[str] = []
    messages: list[Message] = []
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        text = _text(m.content, where)
        if m.role in ("system", "developer"):
            system.append(text)
        elif m.role == "tool":
            if not m.tool_call_id:
                raise BadRequest(f"{where}.tool_call_id is required", field=f"{where}.tool_call_id")
            messages.append(Message("tool", text, tool_call_id=m.tool_call_id))
        else:
            calls = [
                ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
            ]
            role: Literal["user", "assistant"] = "assistant" if m.role == "assistant" else "user"
            messages.append(Message(role, text, tool_calls=calls))
    if not messages:
        raise BadRequest("messages: at least one user message is required", field="messages")
    if not any(m.content.strip() or m.tool_calls for m in messages):
        raise BadRequest("messages: the prompt is empty", field="messages")
    choice: str | dict[str, Any] | None = None
    if isinstance(body.tool_choice, dict):
        fn = body.tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest("tool_choice.function.name is required", field="tool_choice")
        choice = {"name": name}
    elif body.tool_choice is not None:
        if body.tool_choice not in ("auto", "none", "required"):
            raise BadRequest(
                "tool_choice must be 'auto', 'none', 'required' or a function", field="tool_choice"
            )
        choice = body.tool_choice
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    return ChatRequest(
        messages=messages,
        system="\n\n".join(system) or None,
        model=None if body.model in AUTO_MODELS else body.model,
        task_type=task,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        stream=body.stream,
        tools=[
            Tool(t.function.name, t.function.description, t.function.parameters)
            for t in body.tools or ()
        ],
        tool_choice=choice,
        user=body.user,
    )


def _usage(u: Any) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


async def chat_completions(request: Request) -> Response:
    info = RequestInfo("openai", request.headers.get("cache-control"))
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    body = validate(ChatBody, await read_json(request, catalog.settings.max_body_bytes))
    req = to_chat_request(body, task_header(request))
    completion_id = f"chatcmpl-{info.id.replace('-', '')}"
    created = int(time.time())
    if req.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        streaming = await s.serve.stream(caller, req, info)
        return StreamingResponse(
            _stream(streaming, completion_id, created, include_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS
            | _headers(streaming.provider, streaming.model, streaming.cache_hit)
            | {REQUEST_ID: info.id},
            background=BackgroundTask(streaming.close),
        )
    done = await s.serve.complete(caller, req, info)
    r = done.result
    message: dict[str, Any] = {"role": "assistant", "content": r.content, "refusal": None}
    if r.tool_calls:
        message["content"] = r.content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in r.tool_calls
        ]
    payload = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": done.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": r.finish_reason}
        ],
        "usage": _usage(r.usage),
        "system_fingerprint": None,
    }
    headers = _headers(done.provider, done.model, done.cache_hit) | {
        "x-switchyard-cost-usd": format(done.cost.total.normalize(), "f"),
        REQUEST_ID: info.id,
    }
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _headers(provider: str, model: str, cache_hit: bool) -> dict[str, str]:
    return {
        "x-switchyard-provider": provider,
        "x-switchyard-model": model,
        "x-switchyard-cache": "hit" if cache_hit else "miss",
    }


async def _stream(
    streaming: Streaming, cid: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    dumps = orjson.dumps
    head = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": streaming.model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c = head | {
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        }
        return b"data: " + dumps(c) + b"\n\n"

    # Text deltas are most of a stream: splice them into pre-encoded bytes.
    text_head = chunk({"content": ""})
    cut = text_head.index(b'"content":""') + len(b'"content":')
    text_prefix, text_suffix = text_head[:cut], text_head[cut + 2 :]

    yield chunk({"role": "assistant", "content": ""})
    reason = "stop"
    try:
        async for event in streaming.events():
            if type(event) is TextDelta:
                yield text_prefix + dumps(event.text) + text_suffix
            elif isinstance(event, ToolCallDelta):
                call: dict[str, Any] = {"index": event.index}
                if event.id is not None:
                    call["id"] = event.id
                    call["type"] = "function"
                    call["function"] = {"name": event.name or "", "arguments": event.arguments}
                else:
                    call["function"] = {"arguments": event.arguments}
                yield chunk({"tool_calls": [call]})
            elif isinstance(event, Finish):
                reason = event.reason
    except SwitchyardError as exc:
        yield b"data: " + dumps(error_body(exc, "openai")) + b"\n\n"
        return
    yield chunk({}, reason)
    if include_usage:
        yield b"data: " + dumps(head | {"choices": [], "usage": _usage(streaming.usage)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def list_models(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    org = catalog.org(caller.organization)
    created = int(s.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": routes[0].provider.name}
        for name, routes in sorted(org.by_name.items())
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
