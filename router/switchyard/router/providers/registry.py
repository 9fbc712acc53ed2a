"""Which adapter speaks for which provider type. Adding a provider is one line here."""

from __future__ import annotations

from switchyard.router.contract import Provider
from switchyard.router.providers.anthropic import AnthropicAdapter
from switchyard.router.providers.base import Adapter
from switchyard.router.providers.ollama import OllamaAdapter
from switchyard.router.providers.openai import AzureOpenAIAdapter, OpenAIAdapter, VLLMAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "azure_openai": AzureOpenAIAdapter,
    "vllm": VLLMAdapter,
    "anthropic": AnthropicAdapter,
    "ollama": OllamaAdapter,
}


def make_adapter(provider: Provider, api_key: str | None) -> Adapter:
    return ADAPTERS[provider.provider_type](provider, api_key)
