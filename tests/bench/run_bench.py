"""Router benchmark: the same load straight to a fast fake upstream and through the router.

    ./dev bench [--duration 10] [--quick] [--tracing] [--against REF]

Prints, for each load, requests/s, latency percentiles and the router's CPU
time per request (from /proc, divided by the requests the upstream received),
then the selection time with 1,000 models and the router's resident memory.
Every figure is compared with the direct baseline measured in the same run, and the
router's CPU and added latency with the floor's (``floor.py``: a bare ASGI app passing
each request through one pooled aiohttp session on the same server, the limit of a
Python gateway's hot path).

``--against REF`` also runs the router of a git revision (a worktree) beside this one,
load by load in the same run: the target ``before`` in the table, and its own lines
against the floor.

``--tracing`` instead measures what tracing costs: three routers on the same upstream,
tracing off, 1% sampled and every request traced, exporting to a real OpenTelemetry
Collector (``tests/support/otelcol``); their CPU per non-streaming request (c=32) in
interleaved rounds, the medians and the difference from tracing off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KEY = "sy-bench-key"
CLK = os.sysconf("SC_CLK_TCK")
#: How long after the loads PSS is read again: the routers give malloc's free pages back
#: every 10 s.
SETTLE_S = 11.0
NONSTREAM = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 32,
}
STREAM = {**NONSTREAM, "stream": True, "stream_options": {"include_usage": True}}
#: The same stream asked for by an Anthropic client: translated both ways, not relayed.
MESSAGES_STREAM = {**NONSTREAM, "stream": True}


def missing_tool(name: str) -> bool:
    """Say so, on stderr, when the program ``name`` (a Debian package's) is not on PATH."""
    if shutil.which(name) is not None:
        return False
    print(f"bench: {name} is needed (Debian: apt-get install {name})", file=sys.stderr)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ADMIN: dict[int, int] = {}


def admin_port(port: int) -> int:
    """The admin port (/healthz, /readyz, /metrics) of the router on API port ``port``."""
    if port not in _ADMIN:
        _ADMIN[port] = free_port()
    return _ADMIN[port]


#: API ports of routers from before the admin port, which answer /readyz on them.
_NO_ADMIN: set[int] = set()


def has_admin_port(tree: Path) -> bool:
    """Whether the router of checkout ``tree`` takes ``--admin-port``."""
    cli = tree / "router" / "switchyard" / "router" / "cli.py"
    return cli.exists() and "--admin-port" in cli.read_text()


def ready_url(port: int) -> str:
    """The /readyz of the router on API port ``port``."""
    return f"http://127.0.0.1:{port if port in _NO_ADMIN else admin_port(port)}/readyz"


def wait_http(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def wait_until_listening(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids += process_tree(int(child))
    return pids


def pss_mib(pid: int) -> tuple[float, int]:
    """The proportional set size of ``pid`` and every process it started (shared pages
    counted once in all), and how many processes that is."""
    total, pids = 0.0, process_tree(pid)
    for p in pids:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) / 1024
    return total, len(pids)


def upstream_count(stats_url: str) -> int:
    with urllib.request.urlopen(stats_url) as r:
        stats = json.loads(r.read())
    return int(stats["chat_requests"]) + int(stats["stream_requests"])


def wrk(url: str, body: dict, conc: int, duration: int, auth: str | None) -> dict[str, float]:
    env = dict(os.environ, BODY=json.dumps(body), AUTH=auth or "")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conc}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(HERE / "post_json.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    return {k: float(v) for k, v in fields.items() if k != "tag"}


def cpu_per_request(
    pid: int,
    url: str,
    stats_url: str,
    conc: int,
    duration: int,
    body: dict[str, Any] = NONSTREAM,
    warmup: int = 2,
) -> tuple[float, dict[str, float]]:
    """Router ``pid``'s CPU ms per request served upstream under wrk (``body``,
    ``conc`` connections, after a ``warmup``), and wrk's figures. Fails loudly when
    the router failed requests."""
    wrk(url, body, conc, warmup, f"Bearer {KEY}")
    n0, cpu0 = upstream_count(stats_url), cpu_seconds(pid)
    result = wrk(url, body, conc, duration, f"Bearer {KEY}")
    served = upstream_count(stats_url) - n0
    cpu = cpu_seconds(pid) - cpu0
    errors = sum(v for k, v in result.items() if k.startswith("errors_"))
    if errors or not served:
        raise SystemExit(f"the router failed {errors:.0f} requests ({served} served)")
    return cpu * 1000 / served, result


def add_worktree(path: Path, ref: str) -> Path:
    """A git worktree of ``ref`` at ``path`` (``remove_worktree`` when done)."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(path), ref],
        cwd=HERE.parents[1],
        check=True,
    )
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=HERE.parents[1])


def revision_router(
    work: Path, ref: str, table: Path, port: int, *extra: str
) -> subprocess.Popen[bytes]:
    """The router of git revision ``ref`` (a worktree at ``work``/``ref``, with its own
    state directory beside it) serving ``table`` on ``port``; ``remove_worktree`` it
    when done."""
    tree = add_worktree(work / "ref", ref)
    env, module = tree_env(tree)
    state = str(work / "ref-state")
    return router_process(
        table,
        port,
        "--state-dir",
        state,
        *extra,
        env=env,
        module=module,
        admin=has_admin_port(tree),
    )


def tree_env(tree: Path) -> tuple[dict[str, str], str]:
    """How to run the router of a checkout: its own source ahead of the installed one on
    the path, and its CLI module."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if (tree / "router" / "switchyard" / "cli.py").exists():
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "router"), str(tree / "operator")])
        return env, "switchyard.cli"
    env["PYTHONPATH"] = str(tree)  # an older checkout: one package at the root
    return env, "switchyard.router.cli"


def router_process(
    table: Path,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
    module: str = "switchyard.cli",
    admin: bool = True,
) -> subprocess.Popen[bytes]:
    """``switchyard router`` (``module``'s) serving ``table`` on ``port``, quiet but for
    warnings; ``admin``: with its admin port apart (``admin_port``), else answering
    /readyz on ``port`` (``ready_url`` knows which)."""
    if not admin:
        _NO_ADMIN.add(port)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "router",
            "--config",
            str(table),
            "--port",
            str(port),
            *(["--admin-port", str(admin_port(port))] if admin else []),
            "--log-level",
            "warning",
            *extra,
        ],
        env=env,
    )


def fake_upstream(port: int, **popen: Any) -> subprocess.Popen[bytes]:
    """The shared bench's fast fake upstream on ``port``, streaming 20 chunks."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py")],
        env=dict(os.environ, FAKE_PORT=str(port), FAKE_CHUNKS="20"),
        **popen,
    )


def write_table(work: Path, up_port: int) -> Path:
    """``table_doc`` for the fake upstream on ``up_port``, as ``work``/table.yaml."""
    table = work / "table.yaml"
    table.write_text(yaml.safe_dump(table_doc(f"http://127.0.0.1:{up_port}/v1")))
    return table


def table_doc(upstream: str, scopes: tuple[str, ...] = ("completion",)) -> dict:
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": [{"name": "fake", "providerType": "vllm", "baseUrl": upstream}],
        "models": [
            {
                "name": "bench",
                "provider": "fake",
                "modelName": "fake-model",
                "contextWindow": 32000,
                "maxOutputTokens": 4096,
                "inputPricePer1MTokens": "0.15",
                "outputPricePer1MTokens": "0.60",
            }
        ],
        "apiKeys": [
            {
                "name": "bench",
                "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                "scopes": list(scopes),
            }
        ],
    }


def selection_p99(models: int = 1000, rounds: int = 20000) -> tuple[float, float]:
    """p50 and p99 of one selection, in microseconds, over a table of ``models`` models."""
    from switchyard.router.core.catalog import compile_table
    from switchyard.router.core.health import ProviderStates
    from switchyard.router.core.selection import Need, select
    from switchyard.router.table.loader import parse_document

    rng = random.Random(7)
    tasks = ["code_analysis", "test_generation", "documentation", "summarize", "chat", "translate"]
    doc = table_doc("http://127.0.0.1:1/v1")
    doc["providers"] = [
        {
            "name": f"p{i}",
            "providerType": "vllm",
            "baseUrl": f"http://10.0.0.{i}/v1",
            "priority": rng.randint(1, 100),
            "rateLimits": {"requestsPerMinute": 10**9},
        }
        for i in range(100)
    ]
    doc["models"] = [
        {
            "name": f"m{i}",
            "provider": f"p{i % 100}",
            "modelName": f"m{i}",
            "contextWindow": rng.choice([4096, 8192, 32000, 128000]),
            "maxOutputTokens": 4096,
            "inputPricePer1MTokens": f"{rng.random():.4f}",
            "outputPricePer1MTokens": f"{rng.random():.4f}",
            "supportsFunctionCalling": rng.random() < 0.5,
            "avgLatencyMs": rng.randint(50, 2000),
            "bestFor": rng.sample(tasks, 2),
        }
        for i in range(models)
    ]
    catalog = compile_table(parse_document(doc), "x")
    states = ProviderStates()
    states.sync(catalog, {})
    org = catalog.org("default")
    needs = [
        Need(
            None,
            rng.choice([*tasks, None]),
            rng.randint(10, 6000),
            rng.randint(1, 4096),
            rng.random() < 0.5,
            rng.random() < 0.3,
        )
        for _ in range(64)
    ]
    samples = []
    clock = time.perf_counter_ns
    for i in range(rounds):
        need = needs[i % len(needs)]
        t0 = clock()
        select(org, need, time.monotonic(), 3)
        samples.append((clock() - t0) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def tracing_cost(args: argparse.Namespace) -> int:
    """CPU per request with tracing off, at 1% and at 100%, measured side by side."""
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.support.collector import Collector, build

    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    up_port = free_port()
    upstream = fake_upstream(up_port)
    table = write_table(work, up_port)
    collector = Collector(build(), work)
    on = ("--otlp-endpoint", collector.endpoint)
    kinds = {
        "tracing off": (),
        "1% sampled": (*on, "--trace-sample", "0.01"),
        "all traced": (*on, "--trace-sample", "1"),
    }
    routers = {}
    try:
        for label, extra in kinds.items():
            port = free_port()
            state = work / f"state-{len(routers)}"
            process = router_process(table, port, "--state-dir", str(state), "--no-usage", *extra)
            routers[label] = (process, port)
        wait_http(f"http://127.0.0.1:{up_port}/health")
        for _, port in routers.values():
            wait_http(f"http://127.0.0.1:{admin_port(port)}/readyz")
        stats = f"http://127.0.0.1:{up_port}/stats"
        cpu: dict[str, list[float]] = {label: [] for label in routers}
        for _ in range(args.rounds):
            for label, (process, port) in routers.items():
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                ms, _ = cpu_per_request(process.pid, url, stats, 32, args.duration)
                cpu[label].append(ms)
        spans = len(collector.spans())
    finally:
        for process, _ in routers.values():
            process.terminate()
            process.wait(10)
        upstream.terminate()
        upstream.wait(10)
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(cpu["tracing off"])
    print(f"\nCPU ms per non-streaming request, c=32, {args.rounds} interleaved rounds")
    for label, values in cpu.items():
        mid = statistics.median(values)
        rounds = " ".join(f"{v:.3f}" for v in values)
        print(f"  {label:<12} median {mid:.3f} ms  ({mid - base:+.3f} ms)   rounds: {rounds}")
    print(f"  (the collector received {spans} spans)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s runs, for a smoke check")
    parser.add_argument(
        "--no-usage", action="store_true", help="keep no usage records (default: SQLite file)"
    )
    parser.add_argument("--tracing", action="store_true", help="what tracing costs (see above)")
    parser.add_argument(
        "--against",
        metavar="REF",
        help="also run the router of this git revision (target 'before'), load by load",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--tracing: interleaved rounds")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3, 1
    if missing_tool("wrk"):
        return 2
    if args.tracing:
        return tracing_cost(args)

    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    extra = ["--no-usage"] if args.no_usage else []
    up_port, gw_port = free_port(), free_port()
    upstream = fake_upstream(up_port)
    table = write_table(work, up_port)
    started = time.monotonic()
    floor_port = free_port()
    floor = subprocess.Popen(
        [sys.executable, str(HERE / "floor.py")],
        env=dict(
            os.environ, FLOOR_PORT=str(floor_port), FLOOR_UPSTREAM=f"http://127.0.0.1:{up_port}"
        ),
    )
    router = router_process(table, gw_port, "--state-dir", str(work / "state"), *extra)
    before = None
    if args.against:
        before_port = free_port()
        before = revision_router(work, args.against, table, before_port, *extra)
    try:
        wait_http(f"http://127.0.0.1:{up_port}/health")
        wait_http(ready_url(gw_port))
        wait_until_listening(floor_port)
        if before is not None:
            wait_http(ready_url(before_port))
        ready_s = time.monotonic() - started
        rss_idle = rss_mib(router.pid)
        pss_idle, _ = pss_mib(router.pid)
        stats = f"http://127.0.0.1:{up_port}/stats"
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        via = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        messages = f"http://127.0.0.1:{gw_port}/v1/messages"
        floored = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
        auth = f"Bearer {KEY}"
        routers: tuple[tuple[str, str, str | None], ...] = (("router", via, auth),)
        anthropic: tuple[tuple[str, str, str | None], ...] = (("router", messages, auth),)
        pids = {"floor": floor.pid, "router": router.pid}
        if before is not None:
            at = f"http://127.0.0.1:{before_port}"
            routers = (("before", f"{at}/v1/chat/completions", auth), *routers)
            anthropic = (("before", f"{at}/v1/messages", auth), *anthropic)
            pids["before"] = before.pid
        both = (("direct", direct, None), ("floor", floored, None), *routers)
        loads = [
            ("non-streaming", NONSTREAM, 1, both),
            ("non-streaming", NONSTREAM, 32, both),
            ("non-streaming", NONSTREAM, 128, both),
            ("streaming 20 chunks", STREAM, 1, both),
            ("streaming 20 chunks", STREAM, 32, both),
            # No direct baseline: the upstream speaks OpenAI's protocol only.
            ("stream, Anthropic API", MESSAGES_STREAM, 32, anthropic),
        ]
        rows = []
        for label, body, conc, targets in loads:
            for target, url, auth in targets:
                wrk(url, body, conc, args.warmup, auth)
                before_n = upstream_count(stats)
                pid = pids.get(target)
                before_cpu = cpu_seconds(pid) if pid else 0.0
                result = wrk(url, body, conc, args.duration, auth)
                served = upstream_count(stats) - before_n
                cpu = cpu_seconds(pid) - before_cpu if pid else 0.0
                result["cpu_ms"] = cpu * 1000 / served if pid and served else 0.0
                errors = sum(result[k] for k in result if k.startswith("errors_"))
                result["errors"] = errors
                rows.append((label, conc, target, result))
        rss_loaded = rss_mib(router.pid)
        pss_loaded, processes = pss_mib(router.pid)
        floor_pss, _ = pss_mib(floor.pid)
        before_pss = pss_mib(before.pid)[0] if before is not None else 0.0
        # Right after the loads a router still holds the burst's free pages; it gives
        # them back to the system every 10 s (router/heap.py).
        time.sleep(SETTLE_S)
        pss_settled = pss_mib(router.pid)[0]
        before_settled = pss_mib(before.pid)[0] if before is not None else 0.0
    finally:
        if before is not None:
            before.terminate()
            before.wait(10)
            remove_worktree(work / "ref")
        router.terminate()
        floor.terminate()
        upstream.terminate()
        router.wait(10)
        floor.wait(10)
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    sel50, sel99 = selection_p99()
    print()
    print(
        f"{'load':<22}{'conc':>5}  {'target':<7}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}{'errors':>8}"
    )
    for label, conc, target, r in rows:
        cpu = f"{r['cpu_ms']:.3f}" if target != "direct" else "-"
        print(
            f"{label:<22}{conc:>5}  {target:<7}{r['rps']:>10.0f}{r['p50_ms']:>9.3f}"
            f"{r['p99_ms']:>9.3f}{cpu:>12}{r['errors']:>8.0f}"
        )
    print()
    by = {(label, conc, target): r for label, conc, target, r in rows}
    added50 = (
        by[("non-streaming", 1, "router")]["p50_ms"] - by[("non-streaming", 1, "direct")]["p50_ms"]
    )
    added99 = (
        by[("non-streaming", 32, "router")]["p99_ms"]
        - by[("non-streaming", 32, "direct")]["p99_ms"]
    )
    cpu_ns = statistics.mean(by[("non-streaming", c, "router")]["cpu_ms"] for c in (32, 128))
    print("targets (one worker, same upstream, same run):")
    print(f"  CPU per non-streaming request      {cpu_ns:7.3f} ms   (target <= 1 ms)")
    stream_cpu = by[("streaming 20 chunks", 32, "router")]["cpu_ms"]
    print(f"  CPU per 20-chunk stream (relayed)  {stream_cpu:7.3f} ms   (target <= 0.35 ms)")
    cross_cpu = by[("stream, Anthropic API", 32, "router")]["cpu_ms"]
    print(f"  CPU per stream, Anthropic client   {cross_cpu:7.3f} ms   (target <= 0.7 ms)")
    print(f"  added median latency, conc 1       {added50:7.3f} ms   (target <= 1 ms)")
    stream50 = (
        by[("streaming 20 chunks", 1, "router")]["p50_ms"]
        - by[("streaming 20 chunks", 1, "direct")]["p50_ms"]
    )
    print(f"  added median latency, stream c=1   {stream50:7.3f} ms   (target <= 0.4 ms)")
    print(f"  added p99 latency, conc 32         {added99:7.3f} ms   (target <= 5 ms)")
    print(
        f"  selection, 1,000 models, p50 / p99 {sel50:7.1f} / {sel99:.1f} us"
        "   (target p99 <= 50 us)"
    )
    print(
        f"  resident memory idle -> loaded     {rss_idle:7.1f} -> {rss_loaded:.1f} MiB"
        "   (target <= 120 MiB)"
    )
    print(
        f"  PSS, every process, idle -> loaded {pss_idle:7.1f} -> {pss_loaded:.1f} MiB,"
        f" {pss_settled:.1f} MiB {SETTLE_S:.0f} s later"
        f"   ({processes} process{'es' if processes > 1 else ''}; target <= 60 MiB; "
        f"the floor: {floor_pss:.1f} MiB)"
    )
    print(f"  start to ready                     {ready_s:7.2f} s")
    floor_ns = statistics.mean(by[("non-streaming", c, "floor")]["cpu_ms"] for c in (32, 128))
    floor_stream = by[("streaming 20 chunks", 32, "floor")]["cpu_ms"]
    targets = ["router"] if before is None else ["before", "router"]
    for target in targets:
        name = "this tree" if target == "router" else f"before ({args.against})"
        print(f"against the floor, {name} (the same loads, same run):")
        ns = statistics.mean(by[("non-streaming", c, target)]["cpu_ms"] for c in (32, 128))
        stream = by[("streaming 20 chunks", 32, target)]["cpu_ms"]
        cross = by[("stream, Anthropic API", 32, target)]["cpu_ms"]
        print(
            f"  CPU per non-streaming request      {ns / floor_ns:7.2f} x  "
            f"({ns:.3f} vs {floor_ns:.3f} ms; target <= 1.5 x)"
        )
        print(
            f"  CPU per 20-chunk stream (relayed)  {stream / floor_stream:7.2f} x  "
            f"({stream:.3f} vs {floor_stream:.3f} ms; target <= 1.5 x)"
        )
        print(
            f"  CPU per stream, Anthropic client   {cross / floor_stream:7.2f} x  "
            f"({cross:.3f} vs {floor_stream:.3f} ms; target <= 2 x)"
        )
        over = (
            by[("non-streaming", 1, target)]["p50_ms"] - by[("non-streaming", 1, "floor")]["p50_ms"]
        )
        print(f"  added median latency, conc 1       {over:7.3f} ms   (target <= 0.15 ms)")
        pss, settled = (
            (pss_loaded, pss_settled) if target == "router" else (before_pss, before_settled)
        )
        print(
            f"  PSS after load, every process      {settled:7.1f} MiB {SETTLE_S:.0f} s after,"
            f" {pss:.1f} MiB right after (target <= 60 MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
