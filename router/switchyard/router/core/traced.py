"""What a request's spans say (``switchyard.router.tracing``), in OpenTelemetry's GenAI
semantic conventions and Switchyard's own attributes.

The request's span carries what the client asked and what it got: the table model that
answered, tokens, cost, cache hit, why its candidates were chosen. Each provider call's
span carries what that provider was asked (its model name, output cap, temperature),
and its outcome: won, failed with a reason, hedged, cancelled or broken.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from switchyard.router.core.chat import ChatRequest, ChatResult, Usage
from switchyard.router.tracing import MAX_ATTRIBUTE_LENGTH, CallSpan, RequestTrace

if TYPE_CHECKING:
    from switchyard.router.core.accounting import Completed
    from switchyard.router.core.catalog import Route
    from switchyard.router.errors import SwitchyardError

#: ``gen_ai.provider.name``: the conventions' well-known values, else the type's own name.
_PROVIDER_NAME = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure_openai": "azure.ai.openai",
    "vllm": "vllm",
    "ollama": "ollama",
}

#: Why a call was made: the first candidate, the next after a failure, a second call
#: beside a stalled one, or the rest of a stream that broke.
CallKind = str


def gen_ai_provider_name(provider_type: str) -> str:
    return _PROVIDER_NAME.get(provider_type, provider_type)


def call_span(
    trace: RequestTrace,
    route: Route,
    req: ChatRequest | None,
    max_tokens: int,
    kind: CallKind,
    number: int,
) -> CallSpan:
    """The span of one call to ``route``'s provider."""
    op = "chat" if req is not None else "embeddings"
    provider = route.provider
    host, port = _server(provider.url)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": op,
        "gen_ai.provider.name": _PROVIDER_NAME.get(provider.provider_type, provider.provider_type),
        "gen_ai.request.model": route.model.model_name,
        "server.address": host,
        "server.port": port,
        "switchyard.provider": provider.name,
        "switchyard.model": route.model.name,
        "switchyard.attempt.kind": kind,
        "switchyard.attempt.number": number,
    }
    if req is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
        attributes["gen_ai.request.temperature"] = req.temperature
        attributes["gen_ai.request.top_p"] = req.top_p
    return trace.call(f"{op} {route.model.model_name}", attributes)


@functools.lru_cache(maxsize=1024)
def _server(url: str | None) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of a provider's URL."""
    if not url:
        return None, None
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def usage_attributes(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }


def call_failed(span: CallSpan, exc: SwitchyardError) -> None:
    span.end(
        {
            "switchyard.attempt.outcome": "failed",
            "switchyard.failure.reason": exc.message,
            "http.response.status_code": getattr(exc, "upstream_status", None),
        },
        exc.code,
    )


def call_lost(span: CallSpan, outcome: str, usage: Usage | None, reason: str | None) -> None:
    """A call that did not answer its request: hedged (it answered, too late),
    cancelled (given up), or abandoned (the client left)."""
    attributes = {"switchyard.attempt.outcome": outcome, "switchyard.failure.reason": reason}
    span.end(attributes | usage_attributes(usage))


def _content(value: object) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text[:MAX_ATTRIBUTE_LENGTH]


def input_messages(req: ChatRequest) -> str:
    """``gen_ai.input.messages``: the conversation as the conventions shape it."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "parts": [{"type": "text", "content": req.system}]})
    for m in req.messages:
        messages.append({"role": m.role, "parts": [{"type": "text", "content": m.content}]})
    return _content(messages)


def output_messages(result: ChatResult) -> str:
    parts: list[dict[str, Any]] = [{"type": "text", "content": result.content}]
    for call in result.tool_calls:
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
    return _content([{"role": "assistant", "parts": parts, "finish_reason": result.finish_reason}])


def served(
    trace: RequestTrace,
    req: object,
    done: Completed,
    organization: str,
    key: str,
    started: float,
) -> None:
    """End a request that was answered (from a provider or the cache)."""
    result = done.result
    usage = result.usage if not done.cache_hit else Usage()
    common: dict[str, Any] = {
        "gen_ai.response.model": result.upstream_model or None,
        "gen_ai.response.finish_reasons": _reasons(result.finish_reason),
        "gen_ai.response.id": result.upstream_id,
    } | usage_attributes(usage)
    request: dict[str, Any] = {
        "switchyard.organization": organization,
        "switchyard.api_key": key,
        "switchyard.task_type": getattr(req, "task_type", None),
        "switchyard.cache_hit": done.cache_hit,
        "switchyard.cost_usd": float(done.cost.total),
        "switchyard.provider": done.provider or None,
        "switchyard.model": done.model or None,
        "switchyard.stream_continued": done.continued or None,
        "switchyard.attempts_failed": len(done.attempts),
        "http.response.status_code": 200,
    } | common
    if trace.capture and isinstance(req, ChatRequest):
        request["gen_ai.input.messages"] = input_messages(req)
        request["gen_ai.output.messages"] = output_messages(result)
    held = common | {
        "switchyard.attempt.outcome": "won",
        "switchyard.cost_usd": request["switchyard.cost_usd"],
    }
    first = None
    if done.ttft_ms is not None and done.ttft_ms != done.latency_ms:
        first = started + done.ttft_ms / 1000
        request["switchyard.ttft_ms"] = round(done.ttft_ms, 3)
    trace.end(request, None, held, first)


def failed(
    trace: RequestTrace,
    req: object,
    exc: SwitchyardError,
    organization: str,
    key: str,
    usage: Usage | None,
    cost: float,
) -> None:
    attributes = {
        "switchyard.organization": organization,
        "switchyard.api_key": key,
        "switchyard.task_type": getattr(req, "task_type", None),
        "switchyard.failure.reason": exc.message,
        "switchyard.cost_usd": cost,
        "http.response.status_code": exc.status,
    } | usage_attributes(usage)
    trace.end(attributes, exc.code, {"switchyard.failure.reason": exc.message})


def _reasons(reason: str | None) -> Sequence[str] | None:
    return None if not reason else (reason,)


def request_attributes(api: str, method: str, path: str, model: str | None) -> Mapping[str, Any]:
    """The server span's attributes known when the request arrives."""
    return {
        "http.request.method": method,
        "http.route": path,
        "url.path": path,
        "switchyard.api": api,
        "gen_ai.request.model": model,
    }
