"""OpenAI's chat-completions protocol: OpenAI itself and vLLM."""

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
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.core.health import ProbeResult
from switchyard.router.errors import UpstreamProtocolError, UpstreamStatusError
from switchyard.router.providers.base import Adapter, json_error_message

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: Any) -> FinishReason:
    return _FINISH.get(value, "stop") if isinstance(value, str) else "stop"


def to_openai_messages(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": req.system})
    for m in req.messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def function_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """Tools in OpenAI's shape, which Ollama shares."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def tool_choice(value: str | dict[str, Any] | None) -> Any:
    if isinstance(value, dict):
        return {"type": "function", "function": {"name": value["name"]}}
    return value


class OpenAIAdapter(Adapter):
    """``baseUrl`` as the openai SDK takes it, e.g. ``https://api.openai.com/v1``."""

    #: OpenAI deprecated ``max_tokens`` for ``max_completion_tokens``; vLLM takes both.
    max_tokens_field = "max_completion_tokens"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def chat_url(self, model_name: str) -> str:
        return f"{self.base_url}/chat/completions"

    def models_url(self) -> str:
        return f"{self.base_url}/models"

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str]:
        data, text = json_error_message(body)
        if data is None:
            return None, text
        err = data.get("error")
        if isinstance(err, dict):  # OpenAI: {"error": {"message", "type", "code"}}
            code = err.get("code")
            kind = code if isinstance(code, str) and code else err.get("type")
            return (str(kind) if kind else None), str(err.get("message", ""))
        if data.get("object") == "error":  # vLLM: {"object": "error", "message", "type"}
            return data.get("type"), str(data.get("message", ""))
        if isinstance(err, str):
            return None, err
        return None, body[:300].decode("utf-8", "replace")

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model_name,
            "messages": to_openai_messages(req),
            self.max_tokens_field: max_tokens,
        }
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop:
            body["stop"] = req.stop
        if req.tools:
            body["tools"] = function_tools(req.tools)
            if req.tool_choice is not None:
                body["tool_choice"] = tool_choice(req.tool_choice)
        if req.user:
            body["user"] = req.user
        return body

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        data = await self.post_json(
            self.chat_url(model_name), self.body(req, model_name, max_tokens)
        )
        try:
            choice = data["choices"][0]
            message = choice["message"]
            usage = data.get("usage") or {}
            calls = [
                ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
                for c in message.get("tool_calls") or ()
            ]
            return ChatResult(
                content=message.get("content") or "",
                finish_reason=finish_reason(choice.get("finish_reason")),
                usage=Usage(
                    int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                ),
                upstream_model=str(data.get("model") or model_name),
                tool_calls=calls,
                upstream_id=data.get("id"),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamProtocolError(
                f"unexpected chat.completion shape: missing {exc}", provider=self.provider.name
            ) from None

    async def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = self.body(req, model_name, max_tokens)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        resp = await self.open_stream(self.chat_url(model_name), body)
        reason: FinishReason | None = None
        usage: Usage | None = None
        loads = orjson.loads
        async for line in self.lines(resp):
            if not line.startswith(b"data:"):
                continue  # comments (": keep-alive") and other SSE fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                yield Finish(reason or "stop", usage)
                return
            try:
                chunk = loads(payload)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(
                    "a stream event is not JSON", provider=self.provider.name
                ) from None
            if "error" in chunk:
                err = chunk["error"]
                msg = err.get("message", "") if isinstance(err, dict) else str(err)
                raise UpstreamStatusError(
                    f"error in stream: {str(msg)[:300]}",
                    provider=self.provider.name,
                    upstream_status=500,
                )
            u = chunk.get("usage")
            if u:
                usage = Usage(
                    int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
                )
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if text:
                    yield TextDelta(text)
                for tc in delta.get("tool_calls") or ():
                    fn = tc.get("function") or {}
                    yield ToolCallDelta(
                        index=int(tc.get("index") or 0),
                        id=tc.get("id"),
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                if choice.get("finish_reason"):
                    reason = finish_reason(choice["finish_reason"])
        raise UpstreamProtocolError("the stream ended before [DONE]", provider=self.provider.name)

    async def list_models(self) -> list[str]:
        data = await self.get_json(self.models_url())
        try:
            return sorted(str(m["id"]) for m in data["data"])
        except (KeyError, TypeError):
            raise UpstreamProtocolError(
                "unexpected model list shape", provider=self.provider.name
            ) from None


class VLLMAdapter(OpenAIAdapter):
    """vLLM's OpenAI-compatible server (``baseUrl`` ends in ``/v1``)."""

    max_tokens_field = "max_tokens"


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the deployment is the model; ``api-key`` header; ``api-version`` query.

    ``baseUrl`` is the resource endpoint as ``AzureOpenAI(azure_endpoint=...)`` takes it.
    """

    max_tokens_field = "max_tokens"
    default_api_version = "2024-10-21"

    @property
    def api_version(self) -> str:
        return self.provider.api_version or self.default_api_version

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            h["api-key"] = self.api_key
        return h

    def chat_url(self, model_name: str) -> str:
        return (
            f"{self.base_url}/openai/deployments/{model_name}/chat/completions"
            f"?api-version={self.api_version}"
        )

    def models_url(self) -> str:
        return f"{self.base_url}/openai/models?api-version={self.api_version}"

    async def probe(self, model_name: str | None) -> ProbeResult:
        # /openai/models lists the resource's base models, not its deployments.
        return await super().probe(None)

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body = super().body(req, model_name, max_tokens)
        del body["model"]  # the deployment in the URL names it
        return body
