"""The brief's own API, inbound: ``POST /api/v1/llm/completion``, field for field.

A streamed completion is server-sent events ``delta`` (and ``tool_call``) … then
``done``, which carries usage, cost and performance.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

from switchyard.router.core.chat import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from switchyard.router.core.cost import Cost
from switchyard.router.protocols.shared import Integral
from switchyard.router.protocols.sse import named

if TYPE_CHECKING:
    from switchyard.router.core.accounting import Completed
    from switchyard.router.core.streaming import Streaming

#: A task type: what ``taskType`` and the other surfaces' ``X-Switchyard-Task`` accept.
TASK_PATTERN = r"^[A-Za-z0-9_.:-]+$"


#: ``_prompt_or_template`` as JSON Schema, for the OpenAPI document.
_PROMPT_OR_TEMPLATE: list[JsonValue] = [
    {
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "pattern": r"\S"},
            "template": {"type": "null"},
        },
    },
    {
        "required": ["template"],
        "properties": {"template": {"type": "string"}, "prompt": {"type": "null"}},
    },
]


class CompletionBody(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        json_schema_extra={"anyOf": _PROMPT_OR_TEMPLATE},
    )

    task_type: str = Field(min_length=1, max_length=64, pattern=TASK_PATTERN)
    prompt: str | None = Field(default=None, min_length=1, max_length=2_000_000)
    template: str | None = Field(default=None, min_length=1, max_length=253)
    variables: dict[str, str] = Field(default_factory=dict)
    system: str | None = Field(default=None, max_length=2_000_000)
    model: str | None = Field(default=None, min_length=1, max_length=253)
    max_tokens: Annotated[int, Field(ge=1, le=8192), Integral] | None = None
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


def to_chat_request(body: CompletionBody, prompt: str) -> ChatRequest:
    """``prompt`` is the body's, or its template rendered."""
    return ChatRequest(
        messages=[Message("user", prompt)],
        system=body.system,
        model=body.model,
        task_type=body.task_type,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        stream=body.stream,
    )


def usage_json(u: Usage) -> dict[str, int]:
    return {
        "promptTokens": u.prompt_tokens,
        "completionTokens": u.completion_tokens,
        "totalTokens": u.total_tokens,
    }


def cost_json(cost: Cost, saved: Decimal) -> dict[str, str]:
    out = cost.as_json() | {"currency": "USD"}
    if saved:
        out["saved"] = format(saved.normalize(), "f")
    return out


def performance_json(latency_ms: float, ttft_ms: float) -> dict[str, float]:
    return {"latencyMs": round(latency_ms, 3), "timeToFirstTokenMs": round(ttft_ms, 3)}


def completion_json(done: Completed, request_id: str) -> dict[str, Any]:
    result = done.result
    payload: dict[str, Any] = {
        "id": request_id,
        "content": result.content,
        "model": done.model,
        "provider": done.provider,
        "finishReason": result.finish_reason,
        "usage": usage_json(result.usage),
        "cost": cost_json(done.cost, done.saved),
        "performance": performance_json(done.latency_ms, done.ttft_ms),
        "cacheHit": done.cache_hit,
    }
    if done.attempts:
        payload["failedAttempts"] = [a.as_json() for a in done.attempts]
    return payload


class EventEncoder:
    """Neutral events → ``delta`` / ``tool_call`` events, then ``done``."""

    def __init__(self, streaming: Streaming, request_id: str) -> None:
        self.headers: dict[str, str] = {}
        self.streaming = streaming
        self.request_id = request_id
        self.reason: FinishReason = "stop"

    def open(self) -> bytes:
        return b""

    def event(self, event: StreamEvent) -> bytes:
        if type(event) is TextDelta:
            return named(b"delta", {"content": event.text})
        if isinstance(event, ToolCallDelta):
            return named(
                b"tool_call",
                {
                    "index": event.index,
                    "id": event.id,
                    "name": event.name,
                    "arguments": event.arguments,
                },
            )
        if isinstance(event, Finish):
            self.reason = event.reason
        return b""

    def error(self, body: dict[str, Any]) -> bytes:
        return named(b"error", body)

    def close(self) -> bytes:
        s = self.streaming
        return named(
            b"done",
            {
                "id": self.request_id,
                "model": s.model,
                "provider": s.provider,
                "finishReason": self.reason,
                "usage": usage_json(s.usage),
                "cost": cost_json(s.cost, s.saved),
                "performance": performance_json(s.latency_ms, s.ttft_ms),
                "cacheHit": s.cache_hit,
            }
            | ({"continuedFrom": s.continued_from} if s.broken else {}),
        )
