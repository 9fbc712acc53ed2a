"""Storage benchmark: usage logging's cost, cache hits, and the usage query at scale.

    ./dev bench storage [--duration 10]

1. Throughput through the router with usage records going to PostgreSQL,
   against the same router with record keeping off, same upstream, same run.
2. Router CPU per request answered from the response cache, against a miss.
3. GET /api/v1/llm/usage for one month of an organization holding 1,000,000
   records (among 2,000,000), timed end to end over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
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

from switchyard.router.storage.postgres import PostgresStore  # noqa: E402
from switchyard.router.storage.records import UsageRecord, new_id  # noqa: E402
from tests.bench.run_bench import (  # noqa: E402
    KEY,
    admin_port,
    cpu_seconds,
    free_port,
    table_doc,
    upstream_count,
    wait_http,
    wrk,
)
from tests.support.postgres import PostgresServer  # noqa: E402

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}


def table(upstream: str) -> dict:
    return table_doc(upstream, scopes=("completion", "usage:read"))


def start_router(
    work: Path, name: str, upstream: str, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(table(upstream)))
    port = free_port()
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
            str(admin_port(port)),
            "--log-level",
            "warning",
            "--state-dir",
            str(work / name),
            *extra,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
    return proc, url


def seed(url: str, rows: int) -> None:
    """Records for the measured organization in one month, written the way the router
    writes them (so the daily rollups are kept), and as many more for another
    organization and month."""

    async def write() -> None:
        store = PostgresStore(url)
        await store.open()
        providers = ("openai", "anthropic", "local")
        models = ("gpt-4o-mini", "claude", "llama", "gpt-4o")
        tasks = ("code_analysis", "documentation", "chat")
        for org, start in (
            ("acme", datetime(2026, 10, 1, tzinfo=UTC)),
            ("other", datetime(2026, 9, 1, tzinfo=UTC)),
        ):
            batch: list[UsageRecord] = []
            for i in range(rows):
                at = start + timedelta(seconds=(i * 2.592) % 2_592_000)
                pt, ct = 100 + i % 900, 10 + i % 300
                batch.append(
                    UsageRecord(
                        id=new_id(),
                        organization=org,
                        api_key=f"key{i % 20}",
                        api="openai",
                        provider=providers[i % 3],
                        model=models[i % 4],
                        task_type=tasks[i % 3],
                        prompt_tokens=pt,
                        completion_tokens=ct,
                        input_cost=Decimal(pt) * Decimal("0.00000015"),
                        output_cost=Decimal(ct) * Decimal("0.0000006"),
                        saved_cost=Decimal(0),
                        latency_ms=50.0 + (i * 7919) % 3000,
                        ttft_ms=None,
                        status="error" if i % 50 == 0 else "ok",
                        http_status=503 if i % 50 == 0 else 200,
                        error_class=None,
                        cache_hit=i % 10 == 0,
                        stream=False,
                        requested_at=at,
                        completed_at=at,
                    )
                )
                if len(batch) == 5000:
                    await store.write_usage(batch)
                    batch = []
            if batch:
                await store.write_usage(batch)
        await store.close()

    asyncio.run(write())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="switchyard-storage-bench-"))
    pg = PostgresServer().start()
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py")],
        env={"FAKE_PORT": str(up_port), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen[bytes]] = [upstream]
    auth = f"Bearer {KEY}"
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        up = f"http://127.0.0.1:{up_port}/v1"
        logged, logged_url = start_router(work, "logged", up, "--database-url", pg.url)
        off, off_url = start_router(work, "off", up, "--database-url", pg.url, "--no-usage")
        procs += [logged, off]
        rps: dict[str, list[float]] = {"logged": [], "off": []}
        cpu_ms: dict[str, list[float]] = {"logged": [], "off": [], "postgres": []}
        postmaster = pg._postmaster()
        assert postmaster is not None
        for _ in range(2):
            for name, url, proc in (("off", off_url, off), ("logged", logged_url, logged)):
                wrk(f"{url}/v1/chat/completions", BODY, 32, 2, auth)
                c0, p0 = cpu_seconds(proc.pid), cpu_seconds(postmaster)
                result = wrk(f"{url}/v1/chat/completions", BODY, 32, args.duration, auth)
                rps[name].append(result["rps"])
                cpu_ms[name].append((cpu_seconds(proc.pid) - c0) * 1000 / result["requests"])
                if name == "logged":
                    cpu_ms["postgres"].append(
                        (cpu_seconds(postmaster) - p0) * 1000 / result["requests"]
                    )
        time.sleep(2)
        with psycopg.connect(pg.url) as conn:
            stored = conn.execute("SELECT count(*) FROM llm_requests").fetchone()
        # Cache: a hit against a miss, CPU per request of the router process.
        hit_body = {**BODY, "temperature": 0}
        httpx.post(
            f"{logged_url}/v1/chat/completions", json=hit_body, headers={"Authorization": auth}
        )
        cpu: dict[str, float] = {}
        for name, body in (("miss", BODY), ("hit", hit_body)):
            wrk(f"{logged_url}/v1/chat/completions", body, 32, 2, auth)
            before, n0 = (
                cpu_seconds(logged.pid),
                upstream_count(f"http://127.0.0.1:{up_port}/stats"),
            )
            result = wrk(f"{logged_url}/v1/chat/completions", body, 32, args.duration, auth)
            used = cpu_seconds(logged.pid) - before
            served = (
                result["requests"]
                if name == "hit"
                else (upstream_count(f"http://127.0.0.1:{up_port}/stats") - n0)
            )
            cpu[name] = used * 1000 / served
            cpu[name + "_rps"] = result["rps"]
        for p in (logged, off):
            p.terminate()
            p.wait(30)
        # The usage query over a month of a large organization.
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("TRUNCATE llm_requests, llm_usage_daily, llm_spend")
        t0 = time.monotonic()
        seed(pg.url, args.rows)
        seeded = time.monotonic() - t0
        query_table = table(up)
        query_table["apiKeys"][0]["organization"] = "acme"
        (work / "query.yaml").write_text(yaml.safe_dump(query_table))
        port = free_port()
        qproc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchyard.cli",
                "router",
                "--config",
                str(work / "query.yaml"),
                "--port",
                str(port),
                "--admin-port",
                str(admin_port(port)),
                "--log-level",
                "warning",
                "--state-dir",
                str(work / "query"),
                "--database-url",
                pg.url,
            ]
        )
        procs.append(qproc)
        qurl = f"http://127.0.0.1:{port}"
        wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
        timings: dict[str, list[float]] = {}
        cases = [(g, "2026-10-01", "2026-10-31") for g in ("day", "model", "week")]
        # Bounds inside days: the partial days come from the records themselves.
        cases.append(("day", "2026-10-01T12:00:00Z", "2026-10-31T12:00:00Z"))
        for group_by, start, end in cases:
            label = f"groupBy={group_by}" + (" (bounds at noon)" if "T" in start else "")
            for _ in range(7):
                t0 = time.perf_counter()
                r = httpx.get(
                    f"{qurl}/api/v1/llm/usage",
                    headers={"Authorization": auth},
                    params={"startDate": start, "endDate": end, "groupBy": group_by},
                    timeout=60,
                )
                timings.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
            if "T" not in start:
                total = r.json()["totals"]["requests"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        pg.destroy()

    print()
    ratio = statistics.mean(rps["logged"]) / statistics.mean(rps["off"])
    print("usage logging (one router worker, c=32, non-streaming, same upstream and run):")
    print(f"  records off: {' / '.join(f'{x:.0f}' for x in rps['off'])} req/s")
    print(
        f"  to PostgreSQL: {' / '.join(f'{x:.0f}' for x in rps['logged'])} req/s, "
        f"{stored[0] if stored else 0} records stored"
    )
    print(f"  ratio {ratio:.1%}   (target >= 90%)")
    print(
        f"  router CPU per request: off {statistics.mean(cpu_ms['off']):.3f} ms, "
        f"logged {statistics.mean(cpu_ms['logged']):.3f} ms; PostgreSQL CPU per record "
        f"{statistics.mean(cpu_ms['postgres']):.3f} ms"
    )
    print("response cache (router CPU per request):")
    print(
        f"  miss {cpu['miss']:.3f} ms ({cpu['miss_rps']:.0f} req/s), "
        f"hit {cpu['hit']:.3f} ms ({cpu['hit_rps']:.0f} req/s)   (target: hit < 1 ms)"
    )
    print(
        f"usage query, one month of one organization ({total:,} of {2 * args.rows:,} records,"
        f" seeded in {seeded:.0f} s):"
    )
    for label, t in timings.items():
        t = sorted(t[1:])  # the first warms the cache
        print(
            f"  {label:<32} median {statistics.median(t):6.0f} ms, "
            f"max {t[-1]:6.0f} ms   (target < 300 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
