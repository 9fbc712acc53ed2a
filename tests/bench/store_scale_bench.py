"""Does the default store tax every request more as it grows? Router CPU per request
and the usage query, against an empty store, with 1 and 10 million records, on SQLite
and on PostgreSQL.

    ./dev bench store-scale [--sizes 10000,1000000,10000000] [--backends sqlite,postgres]
                            [--rounds 2] [--duration 10]

The first million records are written through the store's own path (rows, daily
rollups and spend counters in one transaction), spread over the last 90 days and four
organizations, the router's own among them; beyond that the rows are copied in SQL
with new ids (the rollups, which reports read for whole days, are not what grows). At
each size a router process serves wrk (non-streaming, c=32) from the fast fake
upstream, writing a usage record per request into that store, and
``GET /api/v1/llm/usage?groupBy=model`` (the default 30 days) is timed over HTTP; the
same is measured by turns on an empty store beside it (``--rounds`` times each), so
that each ratio compares runs made minutes apart at most, and the first row (no records)
shows the noise. Prints each figure and its ratio to the empty store's (goal: at most
1.10), and the query's ratio to the smallest filled store's: the empty store's report
covers one day (the load's own records), the filled ones' the thirty days asked, so the
query's growth with size shows against the smallest filled store, whose records span
the same 90 days.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from switchyard.router.storage.base import Store  # noqa: E402
from switchyard.router.storage.factory import make_store  # noqa: E402
from switchyard.router.storage.records import COLUMNS, UsageRecord, new_id  # noqa: E402
from tests.bench.run_bench import (  # noqa: E402
    KEY,
    admin_port,
    cpu_per_request,
    free_port,
    router_process,
    table_doc,
    wait_http,
)
from tests.support.postgres import PostgresServer  # noqa: E402

BATCH = 10_000
ORGS = ("default", "team-a", "team-b", "team-c")


async def fill(store: Store, start: int, count: int) -> None:
    now = datetime.now(UTC)
    span = 90 * 86400
    models = ("gpt-5.4-mini", "claude-sonnet-5-5", "llama-3.1-8b", "gpt-5.4-nano")
    tasks = ("chat", "summarize", "code_analysis")
    for lo in range(start, start + count, BATCH):
        batch = []
        for i in range(lo, min(lo + BATCH, start + count)):
            at = now - timedelta(seconds=(i * 7919) % span + 3600)
            pt, ct = 200 + i % 900, 50 + i % 300
            batch.append(
                UsageRecord(
                    new_id(),
                    ORGS[i % 4],
                    f"key{i % 20}",
                    "openai",
                    f"p{i % 3}",
                    models[i % 4],
                    tasks[i % 3],
                    pt,
                    ct,
                    Decimal(pt) * Decimal("0.00000075"),
                    Decimal(ct) * Decimal("0.0000045"),
                    Decimal(0),
                    50.0 + (i * 31) % 3000,
                    None,
                    "ok",
                    200,
                    None,
                    i % 10 == 0,
                    False,
                    at,
                    at,
                )
            )
        await store.write_usage(batch)


#: Written through the store; beyond this, rows are copied in SQL.
THROUGH_STORE = 1_000_000
_COPY = ", ".join(COLUMNS[1:])
#: Copies of n rows with new ids, each requested up to an hour earlier than its original.
_SQLITE_COPY = (
    f"INSERT INTO llm_requests (id, {_COPY}) SELECT lower(hex(randomblob(16))), "
    + _COPY.replace("requested_at", "requested_at - abs(random() % 3600)")
    + " FROM llm_requests LIMIT {n}"
)
_PG_COPY = (
    f"INSERT INTO llm_requests (id, {_COPY}) SELECT gen_random_uuid(), "
    + _COPY.replace("requested_at", "requested_at - random() * interval '1 hour'")
    + " FROM llm_requests LIMIT {n}"
)


async def grow(have: int, more: int, sqlite: Path | None, pg: str | None) -> None:
    through = max(0, min(have + more, THROUGH_STORE) - have)
    if through:
        store = make_store(pg, sqlite or "unused")
        await store.open()
        await fill(store, have, through)
        await store.close()
    left = more - through
    while left > 0:
        n = min(left, max(have + through, 1))
        if sqlite is not None:
            with sqlite3.connect(sqlite) as conn:
                conn.execute(_SQLITE_COPY.format(n=n))
        elif pg is not None:
            with psycopg.connect(pg) as conn:
                conn.execute(_PG_COPY.format(n=n))  # type: ignore[arg-type]
        left -= n
        through += n


def measure(work: Path, up_port: int, store_args: list[str], duration: int) -> tuple[float, float]:
    """Router CPU ms per request, and the usage query's median ms."""
    doc = table_doc(f"http://127.0.0.1:{up_port}/v1", scopes=("completion", "usage:read"))
    table = work / "table.yaml"
    table.write_text(yaml.safe_dump(doc))
    port = free_port()
    router = router_process(table, port, *store_args)
    try:
        wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz", 120)
        url = f"http://127.0.0.1:{port}"
        cpu_ms, _ = cpu_per_request(
            router.pid,
            f"{url}/v1/chat/completions",
            f"http://127.0.0.1:{up_port}/stats",
            32,
            duration,
        )
        took = []
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            # The load's own records are written a moment after their answers: the query
            # is timed once they are in, not against the writer catching up.
            count = -1
            for _ in range(120):
                r = http.get(f"{url}/api/v1/llm/usage", params={"groupBy": "model"})
                now_count = r.json()["totals"]["requests"]
                if now_count == count:
                    break
                count = now_count
                time.sleep(0.5)
            for _ in range(11):
                t = time.perf_counter()
                r = http.get(f"{url}/api/v1/llm/usage", params={"groupBy": "model"})
                took.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
        return cpu_ms, statistics.median(took[1:])
    finally:
        router.terminate()
        router.wait(20)


@dataclass
class Row:
    backend: str
    size: int
    cpu: list[float] = field(default_factory=list)  # the filled store's runs
    cpu_empty: list[float] = field(default_factory=list)  # the empty store's, between them
    query: list[float] = field(default_factory=list)
    query_empty: list[float] = field(default_factory=list)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,1000000,10000000")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="switchyard-scale-"))
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py")],
        env=dict(os.environ, FAKE_PORT=str(up_port), FAKE_CHUNKS="20"),
    )
    rows: list[Row] = []
    pg: PostgresServer | None = None
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        for backend in args.backends.split(","):
            sqlite: Path | None = None
            if backend == "postgres":
                pg = PostgresServer().start()
                with psycopg.connect(pg.url, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE empty_store")
                empty_url = pg.url.rsplit("/", 1)[0] + "/empty_store"
                store_args = ["--database-url", pg.url, "--state-dir", str(work / "pg-state")]
                empty_args = ["--database-url", empty_url, "--state-dir", str(work / "pg-empty")]
            else:
                for name in ("sqlite-state", "sqlite-empty"):
                    (work / name).mkdir()
                sqlite = work / "sqlite-state" / "switchyard.db"
                store_args = ["--state-dir", str(work / "sqlite-state")]
                empty_args = ["--state-dir", str(work / "sqlite-empty")]
            have = 0
            for size in [0, *sizes]:
                if size > have:
                    started = time.perf_counter()
                    asyncio.run(grow(have, size - have, sqlite, pg.url if pg else None))
                    took = time.perf_counter() - started
                    print(f"  {backend}: {size:,} records ({took:.0f} s to write)", flush=True)
                    have = size
                # An empty store beside it, run by turns: the machine's drift is in both.
                row = Row(backend, size)
                for _ in range(args.rounds):
                    cpu, query = measure(work, up_port, empty_args, args.duration)
                    row.cpu_empty.append(cpu)
                    row.query_empty.append(query)
                    cpu, query = measure(work, up_port, store_args, args.duration)
                    row.cpu.append(cpu)
                    row.query.append(query)
                rows.append(row)
                print(
                    f"  {backend} at {size:,}: CPU ms per request "
                    f"{', '.join(f'{c:.3f}' for c in row.cpu)} (empty store "
                    f"{', '.join(f'{c:.3f}' for c in row.cpu_empty)}), usage query ms "
                    f"{', '.join(f'{q:.1f}' for q in row.query)} (empty store "
                    f"{', '.join(f'{q:.1f}' for q in row.query_empty)})",
                    flush=True,
                )
            if pg is not None:
                pg.destroy()
                pg = None
    finally:
        upstream.terminate()
        upstream.wait(10)
        if pg is not None:
            pg.destroy()
    med = statistics.median
    print(
        f"\nmedians of {args.rounds} runs each, the empty store's run by turns with the "
        "filled one's\n"
    )
    print(
        f"{'store':<10}{'records':>12}{'CPU ms/req':>12}{'empty':>8}{'ratio':>7}"
        f"{'query ms':>10}{'empty':>8}{'ratio':>7}{'to smallest filled':>20}"
    )
    smallest: dict[str, float] = {}
    for r in rows:
        if r.size and r.backend not in smallest:
            smallest[r.backend] = med(r.query)
        filled = f"{med(r.query) / smallest[r.backend]:>20.2f}" if r.size else f"{'':>20}"
        print(
            f"{r.backend:<10}{r.size:>12,}{med(r.cpu):>12.3f}{med(r.cpu_empty):>8.3f}"
            f"{med(r.cpu) / med(r.cpu_empty):>7.2f}{med(r.query):>10.1f}"
            f"{med(r.query_empty):>8.1f}{med(r.query) / med(r.query_empty):>7.2f}{filled}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
