"""Kept-conversation attacks on one router, and another organization's latency meanwhile.

Part of ``./dev bench hostile``. One ordinary ``completion`` key of one organization:
- grows an Anthropic message thread, and a Responses API conversation, as far as the
  router lets it (large turns, until a turn is refused);
- **thread**: then continues that thread from ``--clients`` connections at once, again
  and again, each continuation reading the whole conversation back;
- **get**: then asks ``GET /v1/responses/{id}`` for the conversation's last answer from
  as many connections, again and again.

Meanwhile a key of another organization sends small ``store: true`` Responses requests
one after another; its p50 is measured idle first, in the same run. The router's
resident memory is sampled throughout. Run on the default SQLite store and on
PostgreSQL (a private server, when Debian's binaries are there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench.run_bench import admin_port, free_port, router_process, rss_mib, wait_http  # noqa: E402

ATTACKER = "sy-bench-attacker-key"
VICTIM = "sy-bench-victim-key"
TURN_BYTES = 400_000


def table(upstream: str) -> dict[str, Any]:
    def org(name: str, key: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return (
            {"name": "fake", "organization": name, "providerType": "vllm", "baseUrl": upstream},
            {
                "name": "bench",
                "organization": name,
                "provider": "fake",
                "modelName": "fake-model",
                "contextWindow": 100_000_000,
                "maxOutputTokens": 4096,
            },
            {
                "name": "key",
                "organization": name,
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "scopes": ["completion"],
            },
        )

    parts = [org("attacker", ATTACKER), org("victim", VICTIM)]
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": [p for p, _, _ in parts],
        "models": [m for _, m, _ in parts],
        "apiKeys": [k for _, _, k in parts],
        "cache": {"enabled": False},
    }


@dataclass
class Phase:
    name: str
    peak_mib: float = 0.0
    answers: Counter[int] = field(default_factory=Counter)
    victim_ms: list[float] = field(default_factory=list)
    victim_failed: int = 0


async def _victim(client: httpx.AsyncClient, url: str, stop: asyncio.Event, phase: Phase) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        r = await client.post(
            f"{url}/v1/responses",
            headers={"Authorization": f"Bearer {VICTIM}"},
            json={"model": "bench", "input": "hello", "store": True},
        )
        if r.status_code == 200:
            phase.victim_ms.append((time.perf_counter() - t) * 1000)
        else:
            phase.victim_failed += 1
        await asyncio.sleep(0.02)


async def _sample(pid: int, stop: asyncio.Event, phase: Phase) -> None:
    while not stop.is_set():
        phase.peak_mib = max(phase.peak_mib, rss_mib(pid))
        await asyncio.sleep(0.05)


async def grow_thread(client: httpx.AsyncClient, url: str, most: int) -> tuple[str, int]:
    """A thread grown turn by turn until the router refuses a turn: its last message's
    id and how many turns it has (``most`` at most: a router that refuses no turn is
    not grown forever)."""
    thread: dict[str, Any] = {"type": "create"}
    last, turns = "", 0
    while True:
        r = await client.post(
            f"{url}/v1/messages",
            headers={"x-api-key": ATTACKER, "anthropic-version": "2023-06-01"},
            json={
                "model": "bench",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"turn {turns} " + "x" * TURN_BYTES}],
                "thread": thread,
            },
        )
        if r.status_code == 429:  # the key reads conversations as fast as it may
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            continue
        if r.status_code != 200 or turns >= most:
            return last, turns
        last, turns = r.json()["id"], turns + 1
        thread = {"type": "continue", "previous_message_id": last}


async def grow_responses(client: httpx.AsyncClient, url: str, most: int) -> tuple[str, int]:
    previous: str | None = None
    last, turns = "", 0
    while True:
        body: dict[str, Any] = {"model": "bench", "input": f"turn {turns} " + "y" * TURN_BYTES}
        if previous:
            body["previous_response_id"] = previous
        r = await client.post(
            f"{url}/v1/responses", headers={"Authorization": f"Bearer {ATTACKER}"}, json=body
        )
        if r.status_code == 429:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            continue
        if r.status_code != 200 or turns >= most:
            return last, turns
        last = previous = r.json()["id"]
        turns += 1


async def _attack(
    client: httpx.AsyncClient, url: str, kind: str, target: str, stop: asyncio.Event, phase: Phase
) -> None:
    while not stop.is_set():
        if kind == "thread":
            r = await client.post(
                f"{url}/v1/messages",
                headers={"x-api-key": ATTACKER, "anthropic-version": "2023-06-01"},
                json={
                    "model": "bench",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "more"}],
                    "thread": {"type": "continue", "previous_message_id": target},
                },
            )
        else:
            r = await client.get(
                f"{url}/v1/responses/{target}", headers={"Authorization": f"Bearer {ATTACKER}"}
            )
        phase.answers[r.status_code] += 1
        if r.status_code in (429, 503):
            await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 10)


def _attackers(url: str, kind: str, target: str, clients: int, seconds: float) -> dict[int, int]:
    """In a process of its own, so that the attackers' client does not share the
    measured client's event loop: how the router answered them, by status."""

    async def go() -> dict[int, int]:
        phase = Phase("attack")
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            tasks = [
                asyncio.ensure_future(_attack(client, url, kind, target, stop, phase))
                for _ in range(clients)
            ]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
        return dict(phase.answers)

    return asyncio.run(go())


async def run_phase(
    url: str, pid: int, name: str, seconds: float, clients: int, target: str | None
) -> Phase:
    phase = Phase(name)
    stop = asyncio.Event()
    attack: concurrent.futures.Future[dict[int, int]] | None = None
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    async with httpx.AsyncClient(timeout=60) as client:
        if target is not None:
            kind = "thread" if target.startswith("msg_") else "get"
            attack = pool.submit(_attackers, url, kind, target, clients, seconds)
        tasks = [
            asyncio.ensure_future(_sample(pid, stop, phase)),
            asyncio.ensure_future(_victim(client, url, stop, phase)),
        ]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
    if attack is not None:
        phase.answers.update(attack.result())
    pool.shutdown()
    return phase


async def campaign(url: str, pid: int, seconds: float, clients: int, turns: int) -> list[str]:
    out = []
    idle = await run_phase(url, pid, "idle", seconds, clients, None)
    async with httpx.AsyncClient(timeout=120) as client:
        thread, thread_turns = await grow_thread(client, url, turns)
        chain, chain_turns = await grow_responses(client, url, turns)
    idle_p50 = statistics.median(idle.victim_ms)
    out.append(
        f"  grown: a thread of {thread_turns} turns and a Responses conversation of "
        f"{chain_turns} turns of {TURN_BYTES // 1000} KB before the router refused a turn"
    )
    out.append(
        f"  idle: router RSS {idle.peak_mib:.1f} MiB; another organization's store:true "
        f"p50 {idle_p50:.1f} ms"
    )
    for name, target in (("get", chain), ("thread", thread)):
        p = await run_phase(url, pid, name, seconds, clients, target)
        p50 = statistics.median(p.victim_ms) if p.victim_ms else float("nan")
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(p.answers.items()))
        out.append(
            f"  {name} attack ({clients} clients, {seconds:g} s): router RSS peak "
            f"{p.peak_mib:.1f} MiB; attacker answered {answers}; the other organization's "
            f"p50 {p50:.1f} ms ({p50 / idle_p50:.2f}x idle), {p.victim_failed} failed"
        )
    return out


def run(store: str, seconds: float, clients: int, turns: int = 40) -> list[str]:
    """One campaign against a router on ``store`` (sqlite or postgres)."""
    pg = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up_port, port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, str(HERE / "fake_upstream.py")],
            env=dict(os.environ, FAKE_PORT=str(up_port)),
            stdout=subprocess.DEVNULL,
        )
        extra = ["--state-dir", str(work / "state")]
        if store == "postgres":
            from tests.support.postgres import PostgresServer

            pg = PostgresServer().start()
            extra += ["--database-url", pg.url]
        (work / "table.yaml").write_text(yaml.safe_dump(table(f"http://127.0.0.1:{up_port}/v1")))
        router = router_process(work / "table.yaml", port, *extra)
        try:
            wait_http(f"http://127.0.0.1:{up_port}/health")
            wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
            lines = asyncio.run(
                campaign(f"http://127.0.0.1:{port}", router.pid, seconds, clients, turns)
            )
        finally:
            router.terminate()
            router.wait(20)
            upstream.terminate()
            upstream.wait(10)
            if pg is not None:
                pg.destroy()
    return [f"kept conversations, {store} store:", *lines]


def postgres_available() -> bool:
    try:
        from tests.support.postgres import server_bin

        server_bin()
    except (RuntimeError, ImportError):
        return False
    return True
