"""Instructions per request, counted by callgrind: repeatable where CPU time is not.

    ./dev bench instructions [--against REF] [--requests N] [--usage] [--paced MS]
                             [--tracing]

Runs the router under ``valgrind --tool=callgrind`` in front of the fast fake upstream,
switches counting on only around N sequential requests (after a warm-up), and prints
the instructions per non-streaming request and per 20-chunk stream, beside the floor's
(``floor.py``, the bare pass-through ``./dev bench router`` compares with) in the same
run. On a shared, noisy machine the same code gives the same count to within about 1%
(most runs far closer), so a change's cost shows even when wall-clock figures swing by
15%. ``--against REF`` measures a
checkout of REF (a git worktree in a temporary folder) in the same run and prints the
ratio. ``--usage`` keeps usage records on (the default SQLite store), as the router runs
by default: what the router does for each record is counted, what the writer process
does with it is not. ``--paced MS`` has the upstream wait MS milliseconds between a
stream's chunks, so each arrives in a read of its own, as a real model's tokens do (by
default the 20 chunks come at once, in one read). ``--tracing`` measures this tree three
times in one run, exporting spans to a real OpenTelemetry Collector
(``tests/support/otelcol``): tracing off, 1% of requests sampled, and every request
traced; the export thread's work is counted with the rest.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench.run_bench import (  # noqa: E402
    KEY,
    MESSAGES_STREAM,
    NONSTREAM,
    STREAM,
    add_worktree,
    admin_port,
    free_port,
    has_admin_port,
    missing_tool,
    remove_worktree,
    table_doc,
    tree_env,
    wait_http,
    wait_until_listening,
)

#: Milliseconds the fake upstream waits between a stream's chunks (``--paced``).
CHUNK_DELAY_MS = 0


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=False)


#: What the router and the floor both serve: a relayed answer and a relayed stream.
_RELAYED: list[tuple[dict[str, object], str]] = [
    (NONSTREAM, "/v1/chat/completions"),
    (STREAM, "/v1/chat/completions"),
]


def measure(
    tree: Path, requests: int, *extra: str, usage: bool = False
) -> tuple[float, float, float]:
    """Instructions per non-streaming request, per stream and per Anthropic client's
    stream of the router in ``tree`` (by default usage off: the writer is another
    process)."""
    env, module = tree_env(tree)
    work = Path(tempfile.mkdtemp(prefix="switchyard-instr-"))
    up, gw = free_port(), free_port()
    (work / "table.yaml").write_text(yaml.safe_dump(table_doc(f"http://127.0.0.1:{up}/v1")))
    # A checkout from before the admin port answers /readyz on the API port.
    split = has_admin_port(tree)
    admin = ["--admin-port", str(admin_port(gw))] if split else []
    command = [
        sys.executable, "-m", module, "router", "--config", str(work / "table.yaml"),
        "--port", str(gw), "--log-level", "warning", "--state-dir", str(work / "state"),
        *([] if usage else ["--no-usage"]), *admin, *extra,
    ]  # fmt: skip
    ready = f"http://127.0.0.1:{admin_port(gw) if split else gw}/readyz"
    loads = [*_RELAYED, (MESSAGES_STREAM, "/v1/messages")]
    counts = _count(
        work, up, gw, command, env, requests, lambda: wait_http(ready, 600), loads, extra, usage
    )
    return counts[0], counts[1], counts[2]


def measure_floor(requests: int) -> tuple[float, float]:
    """The same for the floor (``floor.py``), which relays: no Anthropic surface."""
    work = Path(tempfile.mkdtemp(prefix="switchyard-instr-"))
    up, port = free_port(), free_port()
    env = dict(os.environ, FLOOR_PORT=str(port), FLOOR_UPSTREAM=f"http://127.0.0.1:{up}")
    command = [sys.executable, str(HERE / "floor.py")]
    counts = _count(
        work, up, port, command, env, requests, lambda: wait_until_listening(port), _RELAYED
    )
    return counts[0], counts[1]


def _count(
    work: Path,
    up: int,
    port: int,
    command: list[str],
    env: dict[str, str],
    requests: int,
    wait: Callable[[], None],
    loads: list[tuple[dict[str, object], str]],
    extra: tuple[str, ...] = (),
    usage: bool = False,
) -> list[float]:
    """Run ``command`` under callgrind, serving on ``port`` in front of a fake upstream
    on ``up``, and count its instructions per request for each of ``loads`` (a body and
    its path)."""
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py")],
        env=dict(
            os.environ,
            FAKE_PORT=str(up),
            FAKE_CHUNKS="20",
            FAKE_CHUNK_DELAY_MS=str(CHUNK_DELAY_MS),
        ),
        stdout=subprocess.DEVNULL,
    )
    server = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={work}/callgrind.%p", *command,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def send(body: dict[str, object], count: int, path: str, traced: bool = False) -> None:
        raw = json.dumps(body)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        if traced:  # a client's sampled traceparent: this request is traced, whatever the ratio
            headers["traceparent"] = f"00-{'1' * 32}-{'2' * 16}-01"
        for _ in range(count):
            conn.request("POST", path, raw, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"the server answered {resp.status}")

    def per_request(body: dict[str, object], path: str = "/v1/chat/completions") -> float:
        send(body, 50, path)  # warm-up, not counted
        if extra:  # tracing: its first export (connection, lazy imports) is not counted
            send(body, 5, path, traced=True)
            time.sleep(1.5)
        if usage:  # the warm-up's records written: the writer process has started
            time.sleep(1.5)
        pid = str(server.pid)
        _control("-z", pid)
        _control("-i", "on", pid)
        send(body, requests, path)
        _control("-i", "off", pid)
        before = set(glob.glob(f"{work}/callgrind.*"))
        _control("-d", pid)
        total = None
        deadline = time.monotonic() + 60
        while total is None and time.monotonic() < deadline:
            time.sleep(0.2)
            for path in set(glob.glob(f"{work}/callgrind.*")) - before:
                for line in Path(path).read_text().splitlines():
                    if line.startswith("totals:"):  # the dump's last line
                        total = int(line.split()[1])
        if not total:
            raise RuntimeError("callgrind wrote no count")
        return total / requests

    try:
        wait_http(f"http://127.0.0.1:{up}/health")
        wait()
        return [per_request(body, path) for body, path in loads]
    finally:
        conn.close()
        server.terminate()
        upstream.terminate()
        server.wait(120)
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", metavar="REF", help="also measure this git revision")
    parser.add_argument("--requests", type=int, default=300, help="counted requests per load")
    parser.add_argument(
        "--usage", action="store_true", help="usage records on (the default SQLite store)"
    )
    parser.add_argument(
        "--paced", type=int, default=0, metavar="MS", help="ms between a stream's chunks"
    )
    parser.add_argument(
        "--tracing", action="store_true", help="tracing off, at 1%% and at 100%%, in one run"
    )
    args = parser.parse_args()
    global CHUNK_DELAY_MS
    CHUNK_DELAY_MS = args.paced
    if missing_tool("valgrind"):
        return 2
    trees = [("this tree", ROOT)]
    worktree = None
    if args.against:
        worktree = add_worktree(
            Path(tempfile.mkdtemp(prefix="switchyard-ref-")) / "ref", args.against
        )
        trees.insert(0, (args.against, worktree))
    if args.tracing:
        return _tracing(args.requests)
    try:
        floor_ns, floor_st = measure_floor(args.requests)
        results = [
            (label, *measure(tree, args.requests, usage=args.usage)) for label, tree in trees
        ]
    finally:
        if worktree is not None:
            remove_worktree(worktree)
    records = "usage records on" if args.usage else "usage records off"
    paced = f", {args.paced} ms between chunks" if args.paced else ""
    print(
        f"\ninstructions per request, callgrind, {args.requests} sequential requests each, "
        f"{records}{paced}"
    )
    print(f"{'':<14}{'non-streaming':>16}{'20-chunk stream':>18}{'Anthropic client':>18}")
    print(f"{'the floor':<14}{floor_ns / 1e6:>14.3f} M{floor_st / 1e6:>16.3f} M{'-':>18}")
    for label, ns, st, an in results:
        print(f"{label[:14]:<14}{ns / 1e6:>14.3f} M{st / 1e6:>16.3f} M{an / 1e6:>16.3f} M")
    if len(results) == 2:
        (_, ns0, st0, an0), (_, ns1, st1, an1) = results
        print(f"{'ratio':<14}{ns1 / ns0:>16.3f}{st1 / st0:>18.3f}{an1 / an0:>18.3f}")
    # The Anthropic client's stream against the floor's relayed one, as ./dev bench router.
    _, ns, st, an = results[-1]
    print(f"{'x the floor':<14}{ns / floor_ns:>16.2f}{st / floor_st:>18.2f}{an / floor_st:>18.2f}")
    return 0


def _tracing(requests: int) -> int:
    """Instructions per request with tracing off, at a 1% sample and at 100%."""
    from tests.support.collector import Collector, build

    work = Path(tempfile.mkdtemp(prefix="switchyard-otelcol-"))
    collector = Collector(build(), work)
    try:
        on = ("--otlp-endpoint", collector.endpoint)
        runs = [
            ("tracing off", measure(ROOT, requests)),
            ("1% sampled", measure(ROOT, requests, *on, "--trace-sample", "0.01")),
            ("all traced", measure(ROOT, requests, *on, "--trace-sample", "1")),
        ]
        spans = len(collector.spans())
    finally:
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ninstructions per request, callgrind, {requests} sequential requests each")
    print(f"{'':<14}{'non-streaming':>16}{'20-chunk stream':>18}{'Anthropic client':>18}")
    base = runs[0][1]
    for label, counts in runs:
        pairs = zip(counts, base, strict=True)
        cells = "".join(f"{c / 1e6:>14.3f} M{(c - b) / 1e3:>+7.0f}k" for c, b in pairs)
        print(f"{label:<14}{cells}")
    print(f"(the collector received {spans} spans)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
