"""Adapters for OpenAI's chat-completions protocol: OpenAI itself, vLLM and Azure OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from switchyard.router.core.adapter import ProbeResult
from switchyard.router.core.chat import ChatRequest, ChatResult, StreamEvent, Usage
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.protocols import embeddings
from switchyard.router.protocols import openai as wire
from switchyard.router.protocols.sse import BlockReader, LineReader
from switchyard.router.providers.base import HTTPAdapter


class OpenAIAdapter(HTTPAdapter):
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

    def error_type(self, status: int, body: bytes) -> tuple[str | None, str | None]:
        return wire.error_of(body)

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body = wire.request_body(req, model_name, max_tokens, self.max_tokens_field)
        if req.prefill:
            self.continue_answer(body)
        return body

    def continue_answer(self, body: dict[str, Any]) -> None:
        """OpenAI's API cannot continue an assistant message; it is asked to, in words."""
        body["messages"].append({"role": "user", "content": wire.CONTINUE_INSTRUCTION})

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        return await self.post_json(
            self.chat_url(model_name),
            self.body(req, model_name, max_tokens),
            lambda data: wire.result_of(data, model_name, self.provider.name),
            key=self.key_of(req, model_name),
        )

    def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        body = self.body(req, model_name, max_tokens)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        reader: BlockReader = (
            wire.relay(self.provider.name)
            if req.relay == "openai"
            else LineReader(wire.ChunkDecoder(self.provider.name))
        )
        return self.stream_events(
            self.chat_url(model_name), body, reader, key=self.key_of(req, model_name)
        )

    def embeddings_url(self, model_name: str) -> str:
        return f"{self.base_url}/embeddings"

    async def embed(self, req: EmbeddingRequest, model_name: str) -> EmbeddingResult:
        url, body = self.embeddings_url(model_name), self.embeddings_body(req, model_name)
        if req.relay:
            # The client speaks this protocol: the answer goes on as it arrives.
            chunks = await self.relay_body(url, body)
            return EmbeddingResult(Usage(), model_name, body=chunks)
        return await self.post_json(
            url, body, lambda data: embeddings.result_of(data, model_name, self.provider.name)
        )

    def embeddings_body(self, req: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        return embeddings.request_body(req, model_name)

    async def list_models(self) -> list[str]:
        return await self.get_json(
            self.models_url(), lambda data: wire.model_ids(data, self.provider.name)
        )


class VLLMAdapter(OpenAIAdapter):
    """vLLM's OpenAI-compatible server (``baseUrl`` ends in ``/v1``)."""

    max_tokens_field = "max_tokens"

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body = super().body(req, model_name, max_tokens)
        if self.balancer is not None and self.balancer.server == "llamacpp":
            # llama.cpp keeps a slot's prompt for the next request to reuse only when
            # asked (its default since 2024, said anyway for older servers); vLLM's
            # prefix caching needs nothing, and would log the field as unknown.
            body["cache_prompt"] = True
        return body

    def continue_answer(self, body: dict[str, Any]) -> None:
        """vLLM continues the last assistant message itself, in the chat template."""
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False


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

    def embeddings_url(self, model_name: str) -> str:
        return (
            f"{self.base_url}/openai/deployments/{model_name}/embeddings"
            f"?api-version={self.api_version}"
        )

    def embeddings_body(self, req: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        body = super().embeddings_body(req, model_name)
        del body["model"]  # the deployment in the URL names it
        return body

    async def probe(self, model_names: Sequence[str]) -> ProbeResult:
        # /openai/models lists the resource's base models, not its deployments.
        return await super().probe(())

    def body(self, req: ChatRequest, model_name: str, max_tokens: int) -> dict[str, Any]:
        body = super().body(req, model_name, max_tokens)
        del body["model"]  # the deployment in the URL names it
        return body
