"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import LocalModel, RouterServer, write_table

Factory = Callable[[dict[str, Any]], RouterServer]


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Factory]:
    """Start a router serving a given table document; stopped at the end of the test."""
    started: list[RouterServer] = []

    def start(doc: dict[str, Any]) -> RouterServer:
        path = tmp_path / f"table-{len(started)}.yaml"
        write_table(path, doc)
        server = RouterServer(path).start()
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
