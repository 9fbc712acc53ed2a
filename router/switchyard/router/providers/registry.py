"""Which adapter speaks for which provider type. Adding a provider is one line here."""

from __future__ import annotations

from switchyard.router.contract import Provider, ProviderNetworks
from switchyard.router.contract import networks as networks_of
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


def make_adapter(
    provider: Provider, api_key: str | None, networks: ProviderNetworks | None = None
) -> Adapter:
    """The ``AdapterFactory`` the app hands the gateway; ``networks``: what the table
    lets providers reach beyond the defaults (``providers.addresses``)."""
    allowed = networks_of(networks.allow_cidrs) if networks else ()
    return ADAPTERS[provider.provider_type](provider, api_key, allowed)
