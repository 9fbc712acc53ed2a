"""Five fake providers on loopback and a router in front of them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Factory
from tests.fakes import FakeAnthropic, FakeAzureOpenAI, FakeOllama, FakeOpenAI, FakeVLLM
from tests.fakes.server import FakeServer
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.servers import RouterServer, write_table
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


# -- storage ------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session; each test gets its own database."""
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may kill and start again."""
    server = RedisServer().start()
    yield server
    server.stop()


def fresh_database(server: PostgresServer) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each storage test runs twice: on the embedded SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return fresh_database(server)


@pytest.fixture
def stored_router(
    tmp_path: Path, database_url: str | None
) -> Iterator[Callable[[dict[str, Any]], RouterServer]]:
    """Start routers on the test's store (SQLite in tmp_path, or a fresh PostgreSQL database)."""
    started: list[RouterServer] = []

    def start(
        doc: dict[str, Any], state_dir: Path | None = None, replica_of: RouterServer | None = None
    ) -> RouterServer:
        """``replica_of``: share that router's store, as replicas do (on SQLite, its
        file: the processes of one machine share it, as ``--workers`` do)."""
        path = tmp_path / f"table-{len(started)}.yaml"
        write_table(path, doc)
        server = RouterServer(
            path,
            database_url=database_url,
            state_dir=state_dir or tmp_path / "state",
            sqlite_path=replica_of.sqlite_path if replica_of else None,
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
