"""Ollama's native API, outbound: ``/api/chat`` (NDJSON when streaming) and ``/api/tags``.

``baseUrl`` is Ollama's root, e.g. ``http://ollama:11434``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.errors import UpstreamProtocolError, UpstreamStatusError
from switchyard.router.protocols.shared import (
    arguments_object,
    error_json,
    function_tools,
    output_schema,
)

#: Ollama's ``done_reason`` → the neutral one (a reply with tool calls is "tool_calls").
DONE_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "load": "stop"}


def request_body(req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for m in req.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}}
                for c in m.tool_calls
            ]
        if m.images:
            # Base64 only: selection keeps image URLs away from Ollama.
            msg["images"] = [i.data for i in m.images if i.data]
        messages.append(msg)
    options: dict[str, Any] = {"num_predict": max_tokens}
    if req.temperature is not None:
        options["temperature"] = req.temperature
    if req.top_p is not None:
        options["top_p"] = req.top_p
    if req.stop:
        options["stop"] = req.stop
    body: dict[str, Any] = {"model": model_name, "messages": messages, "options": options}
    if req.tools and req.tool_choice != "none":
        body["tools"] = function_tools(req.tools)
    _translate(req, body, options)
    return body


def _translate(req: ChatRequest, body: dict[str, Any], options: dict[str, Any]) -> None:
    """Other protocols' fields Ollama has a place for (``contract.TRANSLATED``)."""
    params = req.params
    if not params:
        return
    if req.params_protocol == "openai":
        fmt = params.get("response_format")
        if isinstance(fmt, dict):
            # Checked by protocols.openai when the request came in.
            if fmt["type"] == "json_object":
                body["format"] = "json"
            elif fmt["type"] == "json_schema":
                body["format"] = fmt["json_schema"].get("schema") or "json"
        for name in ("seed", "presence_penalty", "frequency_penalty"):
            if name in params:
                options[name] = params[name]
    elif req.params_protocol == "anthropic":
        if "top_k" in params:
            options["top_k"] = params["top_k"]
        schema = output_schema(params)
        if schema is not None:
            body["format"] = schema


def _calls(message: dict[str, Any]) -> list[ToolCall]:
    """Ollama gives tool calls no ids; each gets a random one, so ids stay unique across
    the turns of a conversation that may go on at another provider."""
    return [
        ToolCall(
            f"call_{uuid.uuid4().hex[:24]}",
            c["function"]["name"],
            orjson.dumps(c["function"].get("arguments") or {}).decode(),
        )
        for i, c in enumerate(message.get("tool_calls") or ())
    ]


def _reason(data: dict[str, Any], calls: int) -> FinishReason:
    return "tool_calls" if calls else DONE_REASONS.get(data.get("done_reason") or "", "stop")


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0))


def result_of(data: Any, model_name: str, provider: str) -> ChatResult:
    """A non-streamed ``/api/chat`` answer → the neutral result."""
    try:
        message = data["message"]
        calls = _calls(message)
        return ChatResult(
            content=message.get("content") or "",
            finish_reason=_reason(data, len(calls)),
            usage=_usage(data),
            upstream_model=str(data.get("model") or model_name),
            tool_calls=calls,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(
            f"unexpected /api/chat shape: missing {exc}", provider=provider
        ) from None


class LineDecoder:
    """NDJSON lines of a streamed ``/api/chat`` → neutral events; ``done`` at ``done: true``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.calls = 0
        self.done = False

    def feed(self, line: bytes) -> list[StreamEvent]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "a stream line is not JSON", provider=self.provider
            ) from None
        if "error" in obj:
            raise UpstreamStatusError(
                f"error in stream: {str(obj['error'])[:300]}",
                provider=self.provider,
                upstream_status=500,
            )
        events: list[StreamEvent] = []
        message = obj.get("message") or {}
        text = message.get("content")
        if text:
            events.append(TextDelta(text))
        for call in _calls(message):
            events.append(ToolCallDelta(self.calls, call.id, call.name, call.arguments))
            self.calls += 1
        if obj.get("done"):
            self.done = True
            events.append(Finish(_reason(obj, self.calls), _usage(obj)))
        return events

    def incomplete(self) -> UpstreamProtocolError:
        return UpstreamProtocolError("the stream ended before done: true", provider=self.provider)


def error_of(body: bytes) -> tuple[str | None, str | None]:
    """``{"error": "..."}`` → (no type, the message); no message for any other body."""
    data = error_json(body)
    if isinstance(data, str) or not isinstance(data.get("error"), str):
        return None, None
    return None, data["error"]


def model_names(data: Any, provider: str) -> list[str]:
    """``GET /api/tags`` → the pulled models' names (with their tags)."""
    try:
        return sorted(str(m["name"]) for m in data["models"])
    except (KeyError, TypeError):
        raise UpstreamProtocolError("unexpected /api/tags shape", provider=provider) from None


# -- embeddings: /api/embed ---------------------------------------------------------------
def embed_body(req: EmbeddingRequest, model_name: str) -> dict[str, Any]:
    """Texts only (selection keeps token ids away); an input too long for the model is
    an error, as on OpenAI's API, not cut short."""
    texts = req.texts
    assert texts is not None
    body: dict[str, Any] = {"model": model_name, "input": texts, "truncate": False}
    if "dimensions" in req.params:
        body["dimensions"] = req.params["dimensions"]
    return body


def embedding_result(data: Any, model_name: str, provider: str) -> EmbeddingResult:
    try:
        vectors = [[float(x) for x in v] for v in data["embeddings"]]
        prompt = int(data.get("prompt_eval_count") or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamProtocolError(
            f"unexpected /api/embed answer: {exc}", provider=provider
        ) from None
    return EmbeddingResult(Usage(prompt, 0), str(data.get("model") or model_name), vectors=vectors)
