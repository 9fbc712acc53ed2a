"""How fast does the console answer over a large store? Each of its endpoints, and the
usage API beside them, timed over HTTP against a router whose store holds millions of
records, on SQLite and on PostgreSQL.

    ./dev bench console [--size 10000000] [--backends sqlite,postgres] [--repeat 11]

The store is filled as ``./dev bench store-scale`` fills it: the first million records
through the store's own path (rows, daily rollups per key and spend counters), spread
over the last 90 days, four organizations and twenty API keys; beyond that the rows are
copied in SQL, each up to an hour earlier than its original. Those are all older than an
hour, so ``--recent`` more (100,000 by default) are written for the router's own
organization within the last hour, 5% of them failed: what the requests view sorts.
Prints the median and the slowest of ``--repeat`` timed requests to each endpoint (the
first, which warms the router, is left out).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from switchyard.router.storage.factory import make_store  # noqa: E402
from switchyard.router.storage.records import UsageRecord, new_id  # noqa: E402
from tests.bench.run_bench import (  # noqa: E402
    KEY,
    admin_port,
    free_port,
    router_process,
    table_doc,
    wait_http,
)
from tests.bench.store_scale_bench import grow  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


def _queries() -> list[tuple[str, str, dict[str, str]]]:
    today = datetime.now(UTC).date()

    def back(days: int) -> str:
        return (today - timedelta(days=days - 1)).isoformat()

    return [
        ("usage API, 30 days by model", "/api/v1/llm/usage", {"groupBy": "model"}),
        ("usage API, 90 days by API key", "/api/v1/llm/usage",
         {"groupBy": "apiKey", "startDate": back(90)}),
        ("console spend, 30 days by model", "/console/api/usage",
         {"by": "model", "startDate": back(30)}),
        ("console spend, 90 days by API key, per day", "/console/api/usage",
         {"by": "apiKey", "startDate": back(90), "period": "day"}),
        ("console spend, 365 days by provider", "/console/api/usage",
         {"by": "provider", "startDate": back(365)}),
        ("console spend, 10 years by task, per month", "/console/api/usage",
         {"by": "task", "startDate": back(3650), "period": "month"}),
        ("console health", "/console/api/health", {}),
        ("console requests (last hour)", "/console/api/requests", {}),
    ]  # fmt: skip


async def last_hour(count: int, sqlite: Path | None, pg: str | None) -> None:
    """``count`` records of the router's own organization within the last hour."""
    store = make_store(pg, sqlite or "unused")
    await store.open()
    now = datetime.now(UTC)
    for lo in range(0, count, 10_000):
        batch = []
        for i in range(lo, min(lo + 10_000, count)):
            at = now - timedelta(seconds=(i * 7919) % 3500 + 1)
            failed = i % 20 == 0
            batch.append(
                UsageRecord(
                    new_id(), "default", f"key{i % 20}", "openai", "p0", "gpt-5.4-mini",
                    "chat", 300, 80, Decimal("0.0002"), Decimal("0.0004"), Decimal(0),
                    40.0 + (i * 31) % 5000, None, "error" if failed else "ok",
                    502 if failed else 200, "upstream_error" if failed else None,
                    False, False, at, at,
                )
            )  # fmt: skip
        await store.write_usage(batch)
    await store.close()


def measure(work: Path, store_args: list[str], repeat: int) -> list[tuple[str, float, float]]:
    # The router needs no upstream here: nothing is completed.
    doc = table_doc("http://127.0.0.1:9/v1", scopes=("completion", "usage:read"))
    table = work / "table.yaml"
    table.write_text(yaml.safe_dump(doc))
    port = free_port()
    router = router_process(table, port, *store_args)
    out = []
    try:
        wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz", 120)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            for name, path, params in _queries():
                took = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    r = http.get(url + path, params=params)
                    took.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                out.append((name, statistics.median(took[1:]), max(took[1:])))
    finally:
        router.terminate()
        router.wait(20)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10_000_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--recent", type=int, default=100_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="switchyard-console-"))
    results: dict[str, list[tuple[str, float, float]]] = {}
    for backend in args.backends.split(","):
        pg: PostgresServer | None = None
        try:
            if backend == "postgres":
                pg = PostgresServer().start()
                store_args = ["--database-url", pg.url, "--state-dir", str(work / "pg-state")]
                sqlite = None
            else:
                (work / "sqlite-state").mkdir()
                sqlite = work / "sqlite-state" / "switchyard.db"
                store_args = ["--state-dir", str(work / "sqlite-state")]
            started = time.perf_counter()
            asyncio.run(grow(0, args.size, sqlite, pg.url if pg else None))
            asyncio.run(last_hour(args.recent, sqlite, pg.url if pg else None))
            if pg is not None:
                with psycopg.connect(pg.url, autocommit=True) as conn:
                    conn.execute("ANALYZE")
            print(
                f"  {backend}: {args.size:,} records and {args.recent:,} of the last hour "
                f"({time.perf_counter() - started:.0f} s to write)",
                flush=True,
            )
            results[backend] = measure(work, store_args, args.repeat)
        finally:
            if pg is not None:
                pg.destroy()
    backends = list(results)
    print(f"\nms per request over HTTP, {args.size + args.recent:,} records: median (slowest) of "
          f"{args.repeat - 1}\n")  # fmt: skip
    print("| endpoint | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for i, (name, _, _) in enumerate(next(iter(results.values()))):
        cells = [f"{results[b][i][1]:.1f} ({results[b][i][2]:.1f})" for b in backends]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
