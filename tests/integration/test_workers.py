"""``switchyard router --workers N``: several processes on one port, one truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.integration.conftest import Fakes
from tests.support.servers import free_port, write_table
from tests.support.tables import KEY, model, provider, table
from tests.support.usage_rows import wait_rows

AUTH = {"Authorization": f"Bearer {KEY}"}


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def start(tmp_path: Path, doc: dict, workers: int) -> tuple[subprocess.Popen[bytes], str, str]:
    """The supervisor, the API's URL and the admin port's."""
    path = tmp_path / "table.yaml"
    write_table(path, doc)
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--config",
            str(path),
            "--port",
            str(port),
            "--admin-port",
            str(admin),
            "--workers",
            str(workers),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ),
    )
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{admin_url}/readyz", timeout=1).status_code == 200:
                return proc, url, admin_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the workers did not start")


def ask(url: str) -> int:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    return r.status_code


def served(metrics: str) -> float:
    """The completions answered 200, as one scrape counts them."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("switchyard_requests_total{") and 'status="200"' in line
    )


def test_workers_share_one_port_and_every_request_is_recorded_once(
    fakes: Fakes, tmp_path: Path
) -> None:
    doc = table(
        [provider("local", "vllm", fakes.vllm.url)],
        [model("chat", "local", "meta-llama/Llama-3.1-8B-Instruct")],
    )
    proc, url, admin = start(tmp_path, doc, workers=3)
    try:
        workers = children(proc.pid)
        # The three workers and nothing else: no multiprocessing resource tracker.
        commands = [Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") for c in workers]
        assert len(workers) == 3 and all(b"--worker-of" in c for c in commands), commands
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(pool.map(lambda _: ask(url), range(60)))
        assert statuses == {200: 60}
        rows = wait_rows(None, tmp_path / "state", 60)
        assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
        # Whichever worker a scrape reaches (each its own connection), it counts all 60.
        scrapes = [httpx.get(f"{admin}/metrics", timeout=5).text for _ in range(9)]
        assert [served(m) for m in scrapes] == [60.0] * 9
        # A gauge is one series for all of them, not one per worker.
        assert all("\nswitchyard_table_models 1.0\n" in m for m in scrapes)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # Every worker, and every worker's usage writer, is gone with the supervisor.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() for c in workers):
        left = {c: Path(f"/proc/{c}/cmdline").read_bytes()[:80] for c in workers
                if Path(f"/proc/{c}").exists()}  # fmt: skip
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


def test_workers_keep_a_providers_rate_budget_together(fakes: Fakes, tmp_path: Path) -> None:
    doc = table(
        [provider("local", "vllm", fakes.vllm.url, rateLimits={"requestsPerMinute": 30})],
        [model("chat", "local", "meta-llama/Llama-3.1-8B-Instruct")],
    )
    proc, url, _ = start(tmp_path, doc, workers=3)
    try:
        before = fakes.vllm.completions
        with ThreadPoolExecutor(6) as pool:
            statuses = Counter(pool.map(lambda _: ask(url), range(90)))
        sent = fakes.vllm.completions - before
        # Each of the three holds a third of the minute's 30: together never more.
        assert sent == statuses[200] and 10 <= sent <= 30, statuses
        assert statuses[503] == 90 - sent
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
