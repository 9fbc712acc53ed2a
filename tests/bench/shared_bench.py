"""What shared budgets cost: router CPU per request with the provider's rate budgets and
the organization's spending budget kept in Redis (``--redis-url``), against the same
budgets kept in the process.

    ./dev bench shared [--duration 10] [--rounds 2] [--conc 32]

One router process and the fast fake upstream; the provider has requests- and
tokens-per-minute budgets, and the organization a daily spending budget, far above the
load, so every request takes from all three and none is refused. The two configurations
alternate, ``--rounds`` times each, in the same run; wrk drives non-streaming requests
at ``--conc`` connections. Prints CPU per request (router process, utime + stime) for
each, and the difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench.run_bench import (  # noqa: E402
    admin_port,
    cpu_per_request,
    free_port,
    router_process,
    table_doc,
    wait_http,
)
from tests.support.redis import RedisServer  # noqa: E402


def run(
    work: Path, table: Path, up_port: int, redis_url: str | None, args: argparse.Namespace
) -> tuple[float, float, float]:
    """CPU ms per request, requests/s and p99 ms of one router under wrk."""
    port = free_port()
    router = router_process(
        str(table),
        port,
        "--state-dir",
        str(work / f"state-{port}"),
        *(["--redis-url", redis_url] if redis_url else []),
    )
    try:
        wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
        cpu_ms, result = cpu_per_request(
            router.pid,
            f"http://127.0.0.1:{port}/v1/chat/completions",
            f"http://127.0.0.1:{up_port}/stats",
            args.conc,
            args.duration,
        )
        return cpu_ms, result["rps"], result["p99_ms"]
    finally:
        router.terminate()
        router.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conc", type=int, default=32)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="switchyard-shared-"))
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py")],
        env=dict(os.environ, FAKE_PORT=str(up_port), FAKE_CHUNKS="20"),
    )
    redis = RedisServer().start()
    doc = table_doc(f"http://127.0.0.1:{up_port}/v1")
    doc["providers"][0]["rateLimits"] = {
        "requestsPerMinute": 100_000_000,
        "tokensPerMinute": 1_000_000_000,
    }
    doc["budgets"] = [{"organization": "default", "dailyUsd": "1000000"}]
    table = work / "table.yaml"
    table.write_text(yaml.safe_dump(doc))
    results: dict[str, list[tuple[float, float, float]]] = {"in process": [], "on Redis": []}
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        for _ in range(args.rounds):
            results["in process"].append(run(work, table, up_port, None, args))
            results["on Redis"].append(run(work, table, up_port, redis.url, args))
    finally:
        upstream.terminate()
        upstream.wait(10)
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nnon-streaming at c={args.conc}, {args.duration} s x {args.rounds} rounds each, "
        "alternating; the provider's RPM and TPM budgets and a daily spending budget taken "
        "by every request\n"
    )
    print(f"{'budgets':<12}{'CPU ms/req':>12}{'req/s':>10}{'p99 ms':>9}   runs (CPU ms/req)")
    medians = {}
    for name, rows in results.items():
        cpu = statistics.median(r[0] for r in rows)
        medians[name] = cpu
        print(
            f"{name:<12}{cpu:>12.3f}{statistics.median(r[1] for r in rows):>10.0f}"
            f"{statistics.median(r[2] for r in rows):>9.2f}   "
            + ", ".join(f"{r[0]:.3f}" for r in rows)
        )
    print(
        f"\nshared budgets cost {medians['on Redis'] - medians['in process']:+.3f} ms of router "
        "CPU per request (goal: at most +0.1)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
