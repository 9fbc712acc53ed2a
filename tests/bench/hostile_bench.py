"""Hostile-client benchmark: the router's memory and availability while it is attacked.

    ./dev bench hostile [--slow 2000] [--oversized 8] [--header-timeout 10]
                        [--only connections|conversations] [--clients 8] [--seconds 10]
                        [--turns 40]

Connections (``--only connections``):
Against one router process with its default connection limits:
- ``--slow`` clients open a connection each and send a request head one byte a second;
- ``--oversized`` clients each send an unfinished header line of up to 48 MB;
- one legitimate client asks ``GET /healthz`` on the admin port every 100 ms throughout.

Prints the router's resident memory idle (the baseline, same run) and at its peak
during the attack, how the attackers were answered and when, and the legitimate
client's latency while it lasted.

Kept conversations (``--only conversations``): see ``conversation_attack.py``; on the
SQLite store and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench import conversation_attack  # noqa: E402
from tests.bench.run_bench import admin_port, free_port, rss_mib, table_doc, wait_http  # noqa: E402

OVERSIZED_BYTES = 48 * 1024 * 1024
CHUNK = 64 * 1024


async def _status(reader: asyncio.StreamReader) -> int | None:
    """The status of the answer the server sent before closing, or None if it just closed."""
    try:
        line = await reader.readline()
    except (ConnectionError, OSError):
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def slow_client(port: int, started: float, out: list[tuple[float, int | None]]) -> None:
    """A request head, one byte a second, until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 10_000
    answered = asyncio.ensure_future(_status(reader))
    for byte in head:
        if answered.done():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, OSError):
            break
        await asyncio.wait([answered], timeout=1.0)
    status = await answered
    out.append((time.monotonic() - started, status))
    writer.close()


async def oversized_client(port: int, out: list[tuple[int, int | None]]) -> None:
    """An unfinished header line of up to 48 MB, as fast as the server takes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Big: ")
    sent = 0
    chunk = b"b" * CHUNK
    try:
        while sent < OVERSIZED_BYTES:
            writer.write(chunk)
            await writer.drain()
            sent += CHUNK
    except (ConnectionError, OSError):
        pass
    status = await _status(reader)
    out.append((sent, status))
    writer.close()


async def legitimate(port: int, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        t = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await reader.read()
        latencies.append((time.monotonic() - t) * 1000)
        writer.close()
        await asyncio.sleep(0.1)


@dataclass
class Attack:
    peak_mib: float = 0.0
    seconds: float = 0.0
    #: Per slow client: seconds until the server answered or closed, and its status.
    slow: list[tuple[float, int | None]] = field(default_factory=list)
    #: Per oversized client: bytes it sent before the server closed, and the status.
    oversized: list[tuple[int, int | None]] = field(default_factory=list)
    #: The legitimate client's request latencies, in milliseconds.
    latencies: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def attack(port: int, pid: int, slow: int, oversized: int) -> Attack:
    result = Attack(peak_mib=rss_mib(pid))
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            result.peak_mib = max(result.peak_mib, rss_mib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    # The kubelet's view: readiness on the admin port, which the attack shares a process with.
    health = asyncio.ensure_future(legitimate(admin_port(port), stop, result.latencies))
    started = time.monotonic()
    tasks = []
    for i in range(slow):
        tasks.append(asyncio.ensure_future(slow_client(port, started, result.slow)))
        if i % 200 == 199:  # within the listen backlog
            await asyncio.sleep(0.05)
    for _ in range(oversized):
        tasks.append(asyncio.ensure_future(oversized_client(port, result.oversized)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stop.set()
    await asyncio.gather(sampler, health)
    result.errors = [r for r in results if isinstance(r, BaseException)]
    result.seconds = time.monotonic() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--oversized", type=int, default=8)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--only", choices=["connections", "conversations"])
    parser.add_argument("--clients", type=int, default=8, help="conversation attackers")
    parser.add_argument("--seconds", type=float, default=10.0, help="per conversation attack")
    parser.add_argument(
        "--turns", type=int, default=40, help="turns of 400 KB grown at most per conversation"
    )
    args = parser.parse_args()
    if args.only != "conversations":
        connections(args)
    if args.only != "connections":
        stores = ["sqlite"]
        if conversation_attack.postgres_available():
            stores.append("postgres")
        for store in stores:
            lines = conversation_attack.run(store, args.seconds, args.clients, args.turns)
            print("\n".join(lines))
    return 0


def connections(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "table.yaml").write_text(yaml.safe_dump(table_doc("http://127.0.0.1:9/v1")))
        port = free_port()
        router = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchyard.cli",
                "router",
                "--config",
                str(work / "table.yaml"),
                "--port",
                str(port),
                "--admin-port",
                str(admin_port(port)),
                "--log-level",
                "warning",
                "--state-dir",
                str(work / "state"),
                "--header-timeout",
                str(args.header_timeout),
            ]
        )
        try:
            wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
            for _ in range(50):
                wait_http(f"http://127.0.0.1:{admin_port(port)}/healthz")
            time.sleep(1)
            idle = rss_mib(router.pid)
            r = asyncio.run(attack(port, router.pid, args.slow, args.oversized))
            time.sleep(1)
            after = rss_mib(router.pid)
        finally:
            router.terminate()
            router.wait(10)
    closed_at = sorted(t for t, _ in r.slow)
    statuses: dict[str, int] = {}
    for _, status in [*r.slow, *r.oversized]:
        key = str(status or "closed without an answer")
        statuses[key] = statuses.get(key, 0) + 1
    print(
        f"router memory (RSS): idle {idle:.1f} MiB, peak under attack {r.peak_mib:.1f} MiB "
        f"({r.peak_mib / idle:.2f}x idle), after {after:.1f} MiB"
    )
    if closed_at:
        print(
            f"slow clients: {len(r.slow)} of {args.slow} closed by the router, the first "
            f"after {closed_at[0]:.1f}s, the last after {closed_at[-1]:.1f}s "
            f"(header timeout {args.header_timeout:g}s)"
        )
    most = max((b for b, _ in r.oversized), default=0)
    print(
        f"oversized clients: {len(r.oversized)} of {args.oversized} closed by the router; "
        f"at most {most / 1024:.0f} KiB of {OVERSIZED_BYTES >> 20} MiB sent before"
    )
    print("answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    if r.latencies:
        print(
            f"a legitimate client meanwhile: {len(r.latencies)} requests, p50 "
            f"{statistics.median(r.latencies):.2f} ms, max {max(r.latencies):.2f} ms"
        )
    if r.errors:
        print(f"client errors: {len(r.errors)} (the first: {r.errors[0]!r})")


if __name__ == "__main__":
    raise SystemExit(main())
