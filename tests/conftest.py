"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from switchyard.router.server import ServerLimits
from tests.support.servers import LocalModel, RouterServer, write_table


class Factory(Protocol):
    def __call__(self, doc: dict[str, Any], limits: ServerLimits | None = None) -> RouterServer: ...


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Factory]:
    """Start a router serving a given table document; stopped at the end of the test."""
    started: list[RouterServer] = []

    def start(doc: dict[str, Any], limits: ServerLimits | None = None) -> RouterServer:
        path = tmp_path / f"table-{len(started)}.yaml"
        write_table(path, doc)
        server = RouterServer(path, limits=limits).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    model = LocalModel().start()
    yield model
    model.stop()
