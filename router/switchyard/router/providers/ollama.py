"""The adapter for Ollama's native API (``baseUrl`` is its root, e.g. ``http://ollama:11434``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from switchyard.router.core.chat import ChatRequest, ChatResult, StreamEvent
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.protocols import ollama as wire
from switchyard.router.protocols.sse import LineReader
from switchyard.router.providers.base import HTTPAdapter


class OllamaAdapter(HTTPAdapter):
    #: Ollama publishes no load: its endpoints are balanced on the router's own counts.
    metrics_path = None

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:  # Ollama behind an authenticating proxy
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str | None]:
        return wire.error_of(body)

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        body = wire.request_body(req, model_name, max_tokens)
        body["stream"] = False
        return await self.post_json(
            f"{self.base_url}/api/chat",
            body,
            lambda data: wire.result_of(data, model_name, self.provider.name),
            key=self.key_of(req, model_name),
        )

    def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = wire.request_body(req, model_name, max_tokens)
        body["stream"] = True
        return self.stream_events(
            f"{self.base_url}/api/chat",
            body,
            LineReader(wire.LineDecoder(self.provider.name)),
            key=self.key_of(req, model_name),
        )

    async def embed(self, req: EmbeddingRequest, model_name: str) -> EmbeddingResult:
        return await self.post_json(
            f"{self.base_url}/api/embed",
            wire.embed_body(req, model_name),
            lambda data: wire.embedding_result(data, model_name, self.provider.name),
        )

    async def list_models(self) -> list[str]:
        return await self.get_json(
            f"{self.base_url}/api/tags", lambda data: wire.model_names(data, self.provider.name)
        )

    @staticmethod
    def serves(models: list[str], name: str) -> bool:
        # Ollama names carry a tag: "llama3.2" is served as "llama3.2:latest".
        return name in models or f"{name}:latest" in models
