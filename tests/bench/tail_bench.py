"""What the default store does to the tail: latency through the router at 32 concurrent
requests with usage records going to the SQLite file, against record keeping off.

    ./dev bench tail [--duration 10] [--rounds 3] [--before DIR]

One router process at a time, the fast fake upstream, wrk with non-streaming requests
at c=32; the configurations alternate, ``--rounds`` times each, in the same run, and
the direct baseline (wrk against the upstream itself) is measured each round too.
``--before DIR`` adds a router run from another checkout's source (``git worktree add
DIR REV``), to compare with an earlier revision. Prints p50 and p99 of each, the p99
each adds to the direct one, and its ratio to the added p99 with storage off (goal: at
most 1.10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench.run_bench import (  # noqa: E402
    KEY,
    NONSTREAM,
    admin_port,
    fake_upstream,
    free_port,
    router_process,
    wait_http,
    write_table,
    wrk,
)


def router_run(
    work: Path, table: Path, extra: list[str], pythonpath: str | None, args: argparse.Namespace
) -> tuple[float, float]:
    port = free_port()
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    state = work / f"state-{port}"
    router = router_process(str(table), port, "--state-dir", str(state), *extra, env=env)
    try:
        wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(url, NONSTREAM, args.conc, 2, f"Bearer {KEY}")
        r = wrk(url, NONSTREAM, args.conc, args.duration, f"Bearer {KEY}")
        return r["p50_ms"], r["p99_ms"]
    finally:
        router.terminate()
        router.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--before", type=Path, help="another checkout to compare with")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="switchyard-tail-"))
    up_port = free_port()
    upstream = fake_upstream(up_port)
    table = write_table(work, up_port)
    configs: dict[str, tuple[list[str], str | None]] = {
        "storage off": (["--no-usage"], None),
        "SQLite, writer process": ([], None),
    }
    if args.before is not None:
        before = args.before.resolve()
        paths = f"{before / 'router'}:{before / 'operator'}"
        configs["SQLite, before (--before)"] = ([], paths)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    direct: list[tuple[float, float]] = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        for _ in range(args.rounds):
            d = wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", NONSTREAM, args.conc,
                    args.duration, None)  # fmt: skip
            direct.append((d["p50_ms"], d["p99_ms"]))
            for name, (extra, pythonpath) in configs.items():
                results[name].append(router_run(work, table, extra, pythonpath, args))
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    d99 = statistics.median(r[1] for r in direct)
    print(
        f"\nnon-streaming at c={args.conc}, {args.duration} s x {args.rounds} rounds, "
        f"alternating; direct to the upstream: p99 {d99:.2f} ms\n"
    )
    print(f"{'router':<28}{'p50 ms':>8}{'p99 ms':>8}{'added p99':>11}{'ratio':>7}   p99 runs")
    off = statistics.median(r[1] for r in results["storage off"]) - d99
    for name, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        print(
            f"{name:<28}{p50:>8.2f}{p99:>8.2f}{p99 - d99:>11.2f}{(p99 - d99) / off:>7.2f}   "
            + ", ".join(f"{r[1]:.2f}" for r in rows)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
