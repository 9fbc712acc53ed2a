"""Which adapter speaks for which provider type. Adding a provider is one line here."""

from __future__ import annotations

from switchyard.router.contract import Provider
from switchyard.router.core.adapter import Adapter
from switchyard.router.providers.anthropic import AnthropicAdapter
from switchyard.router.providers.base import HTTPAdapter
from switchyard.router.providers.ollama import OllamaAdapter
from switchyard.router.providers.openai import AzureOpenAIAdapter, OpenAIAdapter, VLLMAdapter

ADAPTERS: dict[str, type[HTTPAdapter]] = {
    "openai": OpenAIAdapter,
    "azure_openai": AzureOpenAIAdapter,
    "vllm": VLLMAdapter,
    "anthropic": AnthropicAdapter,
    "ollama": OllamaAdapter,
}


def make_adapter(provider: Provider, api_key: str | None) -> Adapter:
    """The ``AdapterFactory`` the app hands the gateway."""
    return ADAPTERS[provider.provider_type](provider, api_key)
