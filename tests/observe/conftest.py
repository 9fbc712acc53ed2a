"""Observability tests: spans a real OpenTelemetry Collector received from a router."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import _clean_fakes, fakes  # noqa: F401
from tests.support.collector import Collector, build


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    try:
        binary = build()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    running = Collector(binary, Path(tmp_path_factory.mktemp("collector")))
    yield running
    running.stop()
