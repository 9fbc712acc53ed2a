"""Ollama's native API: ``/api/chat`` (NDJSON when streaming) and ``/api/tags``."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from switchyard.router.errors import UpstreamProtocolError, UpstreamStatusError
from switchyard.router.providers.anthropic import _json_object
from switchyard.router.providers.base import Adapter, json_error_message
from switchyard.router.providers.openai import function_tools

_DONE: dict[str, FinishReason] = {"stop": "stop", "length": "length", "load": "stop"}


class OllamaAdapter(Adapter):
    """``baseUrl`` is Ollama's root, e.g. ``http://ollama:11434``."""

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:  # Ollama behind an authenticating proxy
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str]:
        data, text = json_error_message(body)
        if data is None:
            return None, text
        return None, str(data.get("error", ""))

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        for m in req.messages:
            msg: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": _json_object(c.arguments)}}
                    for c in m.tool_calls
                ]
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
        return body

    @staticmethod
    def _calls(message: dict[str, Any], start: int = 0) -> list[ToolCall]:
        return [
            ToolCall(
                f"call_{start + i}",
                c["function"]["name"],
                orjson.dumps(c["function"].get("arguments") or {}).decode(),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        ]

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        body = self.body(req, model_name, max_tokens)
        body["stream"] = False
        data = await self.post_json(f"{self.base_url}/api/chat", body)
        try:
            message = data["message"]
            calls = self._calls(message)
            reason = "tool_calls" if calls else _DONE.get(data.get("done_reason") or "", "stop")
            return ChatResult(
                content=message.get("content") or "",
                finish_reason=reason,
                usage=Usage(
                    int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
                ),
                upstream_model=str(data.get("model") or model_name),
                tool_calls=calls,
            )
        except (KeyError, TypeError) as exc:
            raise UpstreamProtocolError(
                f"unexpected /api/chat shape: missing {exc}", provider=self.provider.name
            ) from None

    async def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = self.body(req, model_name, max_tokens)
        body["stream"] = True
        resp = await self.open_stream(f"{self.base_url}/api/chat", body)
        calls = 0
        async for line in self.lines(resp):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(
                    "a stream line is not JSON", provider=self.provider.name
                ) from None
            if "error" in obj:
                raise UpstreamStatusError(
                    f"error in stream: {str(obj['error'])[:300]}",
                    provider=self.provider.name,
                    upstream_status=500,
                )
            message = obj.get("message") or {}
            text = message.get("content")
            if text:
                yield TextDelta(text)
            for call in self._calls(message, calls):
                yield ToolCallDelta(calls, call.id, call.name, call.arguments)
                calls += 1
            if obj.get("done"):
                reason = "tool_calls" if calls else _DONE.get(obj.get("done_reason") or "", "stop")
                yield Finish(
                    reason,
                    Usage(int(obj.get("prompt_eval_count") or 0), int(obj.get("eval_count") or 0)),
                )
                return
        raise UpstreamProtocolError(
            "the stream ended before done: true", provider=self.provider.name
        )

    async def list_models(self) -> list[str]:
        data = await self.get_json(f"{self.base_url}/api/tags")
        try:
            return sorted(str(m["name"]) for m in data["models"])
        except (KeyError, TypeError):
            raise UpstreamProtocolError(
                "unexpected /api/tags shape", provider=self.provider.name
            ) from None

    async def probe(self, model_name: str | None) -> Any:
        # Ollama names carry a tag: "llama3.2" is served as "llama3.2:latest".
        result = await super().probe(None)
        if model_name and result.models:
            names = set(result.models) | {m.removesuffix(":latest") for m in result.models}
            if model_name not in names:
                result.status = "degraded"
                result.message = f"model {model_name!r} is not pulled"
        return result
