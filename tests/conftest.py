"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
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


#: The folders whose tests need a machine that can run them (a real API server, a real
#: node), and the variable that skips them on purpose.
MUST_RUN = {
    "kube": "SWITCHYARD_SKIP_KUBE",
    "node": "SWITCHYARD_SKIP_NODE",
    "observe": "SWITCHYARD_SKIP_OBSERVE",
    "browser": "SWITCHYARD_SKIP_BROWSER",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With SWITCHYARD_REQUIRE_ALL=1 (``.ci/run``), a kube, node, observe or browser test that
    skips fails: a machine that lost Go, root or the node's tools must not pass CI green.
    Setting its SWITCHYARD_SKIP_* variable skips them on purpose."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if os.environ.get("SWITCHYARD_REQUIRE_ALL") != "1":
        return
    folder = Path(str(item.path)).parent.name
    variable = MUST_RUN.get(folder)
    if variable is None or os.environ.get(variable) == "1":
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = (
        f"skipped, but every {folder} test must run here ({reason}); "
        f"{variable}=1 skips them on purpose"
    )
