"""``POST /api/v1/llm/completion``: the brief's API, field for field."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from switchyard.router.core.chat import ChatRequest, Finish, Message, TextDelta, ToolCallDelta
from switchyard.router.core.cost import Cost
from switchyard.router.core.pipeline import RequestInfo, Streaming
from switchyard.router.core.templates import render
from switchyard.router.errors import BadRequest, NotFound, SwitchyardError
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.errors import error_body
from switchyard.router.http.services import services

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The id of the request's usage record, to find it in usage data and logs.
REQUEST_ID = "x-switchyard-request-id"


class CompletionBody(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )

    task_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    prompt: str | None = Field(default=None, min_length=1, max_length=2_000_000)
    template: str | None = Field(default=None, min_length=1, max_length=253)
    variables: dict[str, str] = Field(default_factory=dict)
    system: str | None = Field(default=None, max_length=2_000_000)
    model: str | None = Field(default=None, min_length=1, max_length=253)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False

    @model_validator(mode="after")
    def _prompt_or_template(self) -> CompletionBody:
        if self.prompt is None and self.template is None:
            raise ValueError("give a non-empty 'prompt' (or a 'template' and its 'variables')")
        if self.prompt is not None and self.template is not None:
            raise ValueError("give either 'prompt' or 'template', not both")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must not be blank")
        return self


_TASK = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def task_header(request: Request) -> str | None:
    """The task type of the OpenAI and Anthropic surfaces, under the native API's rules."""
    value = request.headers.get("x-switchyard-task")
    if value is not None and not _TASK.match(value):
        raise BadRequest(
            "X-Switchyard-Task: 1 to 64 letters, digits, '_', '.', ':' or '-'",
            field="X-Switchyard-Task",
        )
    return value


def _usage(u: Any) -> dict[str, int]:
    return {
        "promptTokens": u.prompt_tokens,
        "completionTokens": u.completion_tokens,
        "totalTokens": u.total_tokens,
    }


async def completion(request: Request) -> Response:
    info = RequestInfo("native", request.headers.get("cache-control"))
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    body = validate(CompletionBody, await read_json(request, catalog.settings.max_body_bytes))
    prompt = body.prompt
    if prompt is None:
        assert body.template is not None
        template = catalog.org(caller.organization).templates.get(body.template)
        if template is None:
            raise NotFound(f"template {body.template!r} does not exist", field="template")
        prompt = render(template, body.variables, body.model)
    req = ChatRequest(
        messages=[Message("user", prompt)],
        system=body.system,
        model=body.model,
        task_type=body.task_type,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        stream=body.stream,
    )
    request_id = f"cmpl-{info.id.replace('-', '')}"
    if body.stream:
        streaming = await s.serve.stream(caller, req, info)
        return StreamingResponse(
            _sse(streaming, request_id),
            media_type="text/event-stream",
            headers=SSE_HEADERS | {REQUEST_ID: info.id},
            background=BackgroundTask(streaming.close),
        )
    done = await s.serve.complete(caller, req, info)
    result = done.result
    payload: dict[str, Any] = {
        "id": request_id,
        "content": result.content,
        "model": done.model,
        "provider": done.provider,
        "finishReason": result.finish_reason,
        "usage": _usage(result.usage),
        "cost": _cost(done.cost, done.saved),
        "performance": {
            "latencyMs": round(done.latency_ms, 3),
            "timeToFirstTokenMs": round(done.ttft_ms, 3),
        },
        "cacheHit": done.cache_hit,
    }
    if done.attempts:
        payload["failedAttempts"] = [a.as_json() for a in done.attempts]
    return Response(
        orjson.dumps(payload), media_type="application/json", headers={REQUEST_ID: info.id}
    )


def _cost(cost: Cost, saved: Decimal) -> dict[str, str]:
    out = cost.as_json() | {"currency": "USD"}
    if saved:
        out["saved"] = format(saved.normalize(), "f")
    return out


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _sse(streaming: Streaming, request_id: str) -> AsyncIterator[bytes]:
    reason = "stop"
    try:
        async for event in streaming.events():
            if type(event) is TextDelta:
                yield _event("delta", {"content": event.text})
            elif isinstance(event, ToolCallDelta):
                yield _event(
                    "tool_call",
                    {
                        "index": event.index,
                        "id": event.id,
                        "name": event.name,
                        "arguments": event.arguments,
                    },
                )
            elif isinstance(event, Finish):
                reason = event.reason
    except SwitchyardError as exc:
        yield _event("error", error_body(exc, "native"))
        return
    yield _event(
        "done",
        {
            "id": request_id,
            "model": streaming.model,
            "provider": streaming.provider,
            "finishReason": reason,
            "usage": _usage(streaming.usage),
            "cost": _cost(streaming.cost, streaming.saved),
            "performance": {
                "latencyMs": round(streaming.latency_ms, 3),
                "timeToFirstTokenMs": round(streaming.ttft_ms, 3),
            },
            "cacheHit": streaming.cache_hit,
        },
    )
