"""How many processes a ``switchyard router`` runs: one, and a usage writer on SQLite.

On SQLite, usage records are written by a process of their own, started with the
first record; a router that records no usage, or records it in PostgreSQL, has none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Fakes, fresh_database
from tests.support.postgres import PostgresServer
from tests.support.servers import free_port, write_table
from tests.support.tables import KEY, model, provider, table
from tests.support.usage_rows import wait_rows


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Router:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    def ask(self) -> None:
        r = httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text


@pytest.fixture
def router_process(fakes: Fakes, tmp_path: Path) -> Iterator[Callable[..., Router]]:
    """Start ``switchyard router`` with extra arguments; it is stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> Router:
        path = tmp_path / "table.yaml"
        write_table(
            path,
            table(
                [provider("local", "vllm", fakes.vllm.url)],
                [model("chat", "local", "meta-llama/Llama-3.1-8B-Instruct")],
            ),
        )
        port, admin = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "router", "--config", str(path),
             "--port", str(port), "--admin-port", str(admin),
             "--state-dir", str(tmp_path / "state"), "--log-level", "warning", *extra],
            env=dict(os.environ),
        )  # fmt: skip
        started.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz").status_code == 200:
                    return Router(proc, f"http://127.0.0.1:{port}")
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_router_that_records_no_usage_is_one_process(
    router_process: Callable[..., Router],
) -> None:
    r = router_process("--no-usage")
    r.ask()
    time.sleep(1.5)  # longer than the recorder's batch interval
    assert children(r.proc.pid) == []


def test_a_router_on_postgresql_is_one_process(
    router_process: Callable[..., Router], postgres: PostgresServer, tmp_path: Path
) -> None:
    url = fresh_database(postgres)
    r = router_process("--database-url", url)
    r.ask()
    assert len(wait_rows(url, tmp_path / "state", 1)) == 1
    assert children(r.proc.pid) == []


def test_a_sqlite_router_starts_its_usage_writer_with_the_first_record(
    router_process: Callable[..., Router], tmp_path: Path
) -> None:
    r = router_process()
    assert children(r.proc.pid) == []
    r.ask()
    assert len(wait_rows(None, tmp_path / "state", 1)) == 1
    assert len(children(r.proc.pid)) == 1  # the writer, and no resource tracker
    writer = children(r.proc.pid)[0]
    # It loads sqlite3 and the writing SQL, none of the router's packages.
    maps = Path(f"/proc/{writer}/maps").read_text()
    libraries = {Path(line.split()[-1]).name for line in maps.splitlines() if ".so" in line}
    assert any(name.startswith("_sqlite3") for name in libraries), libraries
    unwanted = ("_pydantic_core", "loop.", "_ssl", "_pickle", "_ctypes", "_datetime")
    assert not [n for n in libraries if n.startswith(unwanted)], libraries
    # Its memory of its own: a bare interpreter and SQLite's small page caches.
    rollup = Path(f"/proc/{writer}/smaps_rollup").read_text()
    pss_kib = next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
    assert pss_kib < 12 * 1024, f"the writer's PSS is {pss_kib} KiB"


def test_a_router_killed_outright_leaves_no_writer_behind(
    router_process: Callable[..., Router], tmp_path: Path
) -> None:
    """The writer learns of it from its input's end: the router held the pipe's only
    writing end."""
    r = router_process()
    r.ask()
    assert len(wait_rows(None, tmp_path / "state", 1)) == 1
    (writer,) = children(r.proc.pid)
    r.proc.kill()
    r.proc.wait(10)
    deadline = time.monotonic() + 10
    while _running(writer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(writer)


def _running(pid: int) -> bool:
    """Not gone, nor a zombie (one exited, waiting to be reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
