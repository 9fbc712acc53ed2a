"""Anthropic's Messages API (``baseUrl`` as the anthropic SDK takes it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.errors import UpstreamProtocolError, UpstreamStatusError
from switchyard.router.providers.base import Adapter, json_error_message

ANTHROPIC_VERSION = "2023-06-01"

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}

#: The status Anthropic uses for each error type inside a stream.
_STREAM_ERROR_STATUS = {
    "overloaded_error": 529,
    "api_error": 500,
    "rate_limit_error": 429,
    "invalid_request_error": 400,
}


def _json_object(text: str) -> Any:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Anthropic wants alternating turns, tool results inside user turns."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            role = "user"
            blocks: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            ]
        elif m.tool_calls:
            role = "assistant"
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _json_object(c.arguments)}
                for c in m.tool_calls
            ]
        else:
            role = m.role
            blocks = [{"type": "text", "text": m.content}]
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


class AnthropicAdapter(Adapter):
    def headers(self) -> dict[str, str]:
        h = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if self.api_key:
            h["x-api-key"] = self.api_key
        return h

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str]:
        data, text = json_error_message(body)
        if data is None:
            return None, text
        err = data.get("error")
        if isinstance(err, dict):
            return err.get("type"), str(err.get("message", ""))
        return None, body[:300].decode("utf-8", "replace")

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model_name,
            "max_tokens": max_tokens,
            "messages": to_anthropic_messages(req.messages),
        }
        if req.system:
            body["system"] = req.system
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
        if req.user:
            body["metadata"] = {"user_id": req.user}
        return body

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        data = await self.post_json(
            f"{self.base_url}/v1/messages", self.body(req, model_name, max_tokens)
        )
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
                usage=Usage(
                    int(usage.get("input_tokens") or 0)
                    + int(usage.get("cache_read_input_tokens") or 0)
                    + int(usage.get("cache_creation_input_tokens") or 0),
                    int(usage.get("output_tokens") or 0),
                ),
                upstream_model=str(data.get("model") or model_name),
                tool_calls=calls,
                upstream_id=data.get("id"),
            )
        except (KeyError, TypeError) as exc:
            raise UpstreamProtocolError(
                f"unexpected message shape: missing {exc}", provider=self.provider.name
            ) from None

    async def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = self.body(req, model_name, max_tokens)
        body["stream"] = True
        resp = await self.open_stream(f"{self.base_url}/v1/messages", body)
        prompt_tokens = 0
        output_tokens = 0
        reason: FinishReason = "stop"
        tool_index: dict[int, int] = {}  # content block index -> tool call index
        loads = orjson.loads
        async for line in self.lines(resp):
            if not line.startswith(b"data:"):
                continue  # "event:" lines repeat the type that the data carries
            try:
                event = loads(line[5:])
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(
                    "a stream event is not JSON", provider=self.provider.name
                ) from None
            kind = event.get("type")
            if kind == "content_block_delta":
                delta = event["delta"]
                if delta.get("type") == "text_delta":
                    yield TextDelta(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    idx = tool_index.get(event.get("index", 0), 0)
                    yield ToolCallDelta(idx, None, None, delta.get("partial_json", ""))
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    idx = len(tool_index)
                    tool_index[event.get("index", 0)] = idx
                    yield ToolCallDelta(idx, block.get("id"), block.get("name"), "")
                elif block.get("type") == "text" and block.get("text"):
                    yield TextDelta(block["text"])
            elif kind == "message_start":
                u = (event.get("message") or {}).get("usage") or {}
                prompt_tokens = (
                    int(u.get("input_tokens") or 0)
                    + int(u.get("cache_read_input_tokens") or 0)
                    + int(u.get("cache_creation_input_tokens") or 0)
                )
                output_tokens = int(u.get("output_tokens") or 0)
            elif kind == "message_delta":
                stop = (event.get("delta") or {}).get("stop_reason")
                if stop:
                    reason = STOP_REASONS.get(stop, "stop")
                u = event.get("usage") or {}
                if "output_tokens" in u:
                    output_tokens = int(u["output_tokens"])
                if u.get("input_tokens"):
                    prompt_tokens = int(u["input_tokens"])
            elif kind == "message_stop":
                yield Finish(reason, Usage(prompt_tokens, output_tokens))
                return
            elif kind == "error":
                err = event.get("error") or {}
                etype = err.get("type")
                raise UpstreamStatusError(
                    f"error in stream: {etype}: {str(err.get('message', ''))[:300]}",
                    provider=self.provider.name,
                    upstream_status=_STREAM_ERROR_STATUS.get(str(etype), 500),
                    upstream_type=etype,
                )
        raise UpstreamProtocolError(
            "the stream ended before message_stop", provider=self.provider.name
        )

    async def list_models(self) -> list[str]:
        data = await self.get_json(f"{self.base_url}/v1/models?limit=1000")
        try:
            return sorted(str(m["id"]) for m in data["data"])
        except (KeyError, TypeError):
            raise UpstreamProtocolError(
                "unexpected model list shape", provider=self.provider.name
            ) from None
