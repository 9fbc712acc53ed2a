"""CPU per request of a git revision's router against this tree's, in alternating rounds.

    ./dev bench ab REF [--rounds 6] [--seconds 4] [--conc 32] [--load stream] [--usage]

Both routers serve the same fast fake upstream at once; each round runs wrk against
one and then the other (the order swapping every round), and measures the router's CPU
time (its own and its children's, from /proc) divided by the requests the upstream
received. It prints every round and the medians. On a shared machine one 10 s run per
router (``./dev bench router --against REF``) swings by 5-10%; rounds that alternate
share the machine's slow and quiet moments, so a change of a few percent shows in the
medians. Unlike ``./dev bench instructions`` this counts what only load shows: the
cyclic collector, system calls, the usage writer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench.run_bench import (  # noqa: E402
    NONSTREAM,
    STREAM,
    cpu_per_request,
    fake_upstream,
    free_port,
    missing_tool,
    ready_url,
    remove_worktree,
    revision_router,
    router_process,
    wait_http,
    write_table,
)

LOADS = {"non-streaming": NONSTREAM, "stream": STREAM}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ref", help="the git revision to measure against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4, help="wrk's run per router per round")
    parser.add_argument("--conc", type=int, default=32)
    parser.add_argument("--load", choices=sorted(LOADS), default="non-streaming")
    parser.add_argument(
        "--usage", action="store_true", help="record usage (SQLite, its writer counted)"
    )
    args = parser.parse_args()
    if missing_tool("wrk"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="switchyard-ab-"))
    extra = [] if args.usage else ["--no-usage"]
    up = free_port()
    upstream = fake_upstream(up)
    table = write_table(work, up)
    ports = {args.ref: free_port(), "this tree": free_port()}
    routers = {
        args.ref: revision_router(work, args.ref, table, ports[args.ref], *extra),
        "this tree": router_process(
            table, ports["this tree"], *extra, "--state-dir", str(work / "state")
        ),
    }
    body = LOADS[args.load]
    stats = f"http://127.0.0.1:{up}/stats"
    cpu: dict[str, list[float]] = {name: [] for name in routers}
    try:
        wait_http(f"http://127.0.0.1:{up}/health")
        for port in ports.values():
            wait_http(ready_url(port))
        names = list(routers)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                url = f"http://127.0.0.1:{ports[name]}/v1/chat/completions"
                ms, _ = cpu_per_request(
                    routers[name].pid, url, stats, args.conc, args.seconds, body, warmup=1
                )
                cpu[name].append(ms)
    finally:
        for proc in routers.values():
            proc.terminate()
            proc.wait(10)
        upstream.terminate()
        upstream.wait(10)
        remove_worktree(work / "ref")
        shutil.rmtree(work, ignore_errors=True)
    usage = "usage on (SQLite)" if args.usage else "usage off"
    print(f"\nCPU ms per request, {args.load}, c={args.conc}, {usage}, {args.rounds} rounds")
    for name, values in cpu.items():
        rounds = " ".join(f"{v:.4f}" for v in values)
        print(f"{name[:14]:<14} median {statistics.median(values):.4f}   rounds {rounds}")
    ratio = statistics.median(cpu["this tree"]) / statistics.median(cpu[args.ref])
    print(f"this tree / {args.ref}: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
