"""Five fake providers on loopback and a router in front of them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Factory
from tests.fakes import FakeAnthropic, FakeAzureOpenAI, FakeOllama, FakeOpenAI, FakeVLLM
from tests.fakes.server import FakeServer
from tests.support.servers import RouterServer
from tests.support.tables import model, provider, table

KEYS = {
    "SY_TEST_OPENAI_KEY": "sk-openai-secret-123",
    "SY_TEST_AZURE_KEY": "azure-secret-456",
    "SY_TEST_ANTHROPIC_KEY": "sk-ant-secret-789",
}

#: model name in the table -> (provider name, name the provider knows)
MODELS = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "azure-gpt": ("azure", "gpt-4o-mini-deploy"),
    "llama": ("vllm", "meta-llama/Llama-3.1-8B-Instruct"),
    "claude": ("anthropic", "claude-haiku-4-5"),
    "ollama-llama": ("ollama", "llama3.2"),
}


@dataclass
class Fakes:
    openai: FakeOpenAI
    azure: FakeAzureOpenAI
    vllm: FakeVLLM
    anthropic: FakeAnthropic
    ollama: FakeOllama

    def by_provider(self, name: str) -> FakeServer:
        server: FakeServer = getattr(self, name)
        return server

    def all(self) -> list[FakeServer]:
        return [self.openai, self.azure, self.vllm, self.anthropic, self.ollama]


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    os.environ.update(KEYS)
    servers = Fakes(
        openai=FakeOpenAI(api_key=KEYS["SY_TEST_OPENAI_KEY"]),
        azure=FakeAzureOpenAI(api_key=KEYS["SY_TEST_AZURE_KEY"], models=["gpt-4o-mini-deploy"]),
        vllm=FakeVLLM(api_key=None),
        anthropic=FakeAnthropic(api_key=KEYS["SY_TEST_ANTHROPIC_KEY"]),
        ollama=FakeOllama(),
    )
    for s in servers.all():
        s.start()
    yield servers
    for s in servers.all():
        s.stop()


@pytest.fixture(autouse=True)
def _clean_fakes(request: pytest.FixtureRequest) -> None:
    if "fakes" in request.fixturenames:
        for s in request.getfixturevalue("fakes").all():
            s.reset()


def five_providers(fakes: Fakes, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    ps = [
        provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
        provider(
            "azure",
            "azure_openai",
            fakes.azure.url,
            key_env="SY_TEST_AZURE_KEY",
            apiVersion="2024-10-21",
        ),
        provider("vllm", "vllm", fakes.vllm.url),
        provider("anthropic", "anthropic", fakes.anthropic.url, key_env="SY_TEST_ANTHROPIC_KEY"),
        provider("ollama", "ollama", fakes.ollama.url),
    ]
    for p in ps:
        p.update(overrides.get(p["name"], {}))
    return ps


def five_models() -> list[dict[str, Any]]:
    return [model(name, prov, upstream) for name, (prov, upstream) in MODELS.items()]


@pytest.fixture
def gateway(fakes: Fakes, router: Factory) -> RouterServer:
    """A router with one model on each of the five provider types."""
    return router(table(five_providers(fakes), five_models()))
