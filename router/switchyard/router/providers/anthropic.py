"""The adapter for Anthropic's Messages API (``baseUrl`` as the anthropic SDK takes it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from switchyard.router.core.chat import (
    BETA_FIELD,
    SERVED,
    ChatRequest,
    ChatResult,
    StreamEvent,
)
from switchyard.router.protocols import anthropic as wire
from switchyard.router.protocols.sse import BlockReader, LineReader
from switchyard.router.providers.base import HTTPAdapter


class AnthropicAdapter(HTTPAdapter):
    def headers(self) -> dict[str, str]:
        h = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "anthropic-version": wire.VERSION,
        }
        if self.api_key:
            h["x-api-key"] = self.api_key
        return h

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str | None]:
        return wire.error_of(body)

    def _headers_for(self, req: ChatRequest) -> dict[str, str] | None:
        """The client's ``anthropic-beta`` features when it spoke this protocol (those
        Switchyard serves itself stay behind), added to the adapter's own headers (its
        session's); None: those alone."""
        if req.params_protocol != "anthropic" or not req.betas:
            return None
        betas = [b for b in req.betas if b not in SERVED]
        return {BETA_FIELD: ",".join(betas)} if betas else None

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        return await self.post_json(
            f"{self.base_url}/v1/messages",
            wire.request_body(req, model_name, max_tokens),
            lambda data: wire.result_of(data, model_name, self.provider.name),
            self._headers_for(req),
        )

    def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = wire.request_body(req, model_name, max_tokens)
        body["stream"] = True
        reader: BlockReader = (
            wire.relay(self.provider.name)
            if req.relay == "anthropic"
            else LineReader(wire.EventDecoder(self.provider.name))
        )
        return self.stream_events(
            f"{self.base_url}/v1/messages", body, reader, self._headers_for(req)
        )

    async def count_tokens(self, req: ChatRequest, model_name: str) -> int | None:
        body = wire.request_body(req, model_name, 1)
        del body["max_tokens"]  # count_tokens refuses it
        return await self.post_json(
            f"{self.base_url}/v1/messages/count_tokens",
            body,
            lambda data: wire.input_tokens(data, self.provider.name),
            self._headers_for(req),
        )

    async def list_models(self) -> list[str]:
        return await self.get_json(
            f"{self.base_url}/v1/models?limit=1000",
            lambda data: wire.model_ids(data, self.provider.name),
        )
