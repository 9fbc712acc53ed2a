"""Reaching a model server's replicas: through a Service's address (each new connection
to a replica at random, as kube-proxy does) against the router picking an endpoint per
call by live load with prompt-cache affinity.

    ./dev bench balance [--fakes | --llamacpp N | --node N] [--parallel 4] [--kill]
                        [--plot bench-results/balance.png]

``--fakes`` (the default, about a minute): three faithful fake vLLM replicas
(``tests/fakes/model_server.py``), one engine slot each, a bounded prefix cache, and a
prefill cost per uncached prompt token. ``--llamacpp N``: N real llama.cpp servers
(``switchyard local-model``, SmolLM2-135M, one thread each), with a smaller workload so
that a mode takes a minute or two on a small machine. ``--node N``: a real node
(``tests/node``, root), the chart installed with its llama.cpp server at N pods, the
baseline a provider on the Service's address (``balance_node.py``).

The same workload (``balance_workload.py``: conversations sharing a system prompt, and
one-off questions, streamed through the ``openai`` SDK) runs once per mode, each mode on
replicas started afresh so that both begin with cold caches; llama.cpp's slots each hold
the shared system prompt first (``warm_slots``, as on servers that have served a while),
the conversations' own prompts cold. The router runs in this
process in both modes; only its table differs: the Service's address as the provider's
``baseUrl`` (``tests/support/spread.py``), or the replicas' addresses as its
``endpoints``.

Per mode it prints the time to the first token (p50, p99), the prompt tokens the
replicas computed and found cached (the fakes' own counts; llama.cpp's
``llamacpp:prompt_tokens_total`` and ``llamacpp:prompt_tokens_cached_total`` before and
after), the requests each replica served (llama.cpp's are counted by a pass-through in
front of each server), the failures, and picking's ratios to the baseline; then the
router's affinity hits and picks per endpoint (``GET /api/v1/llm/providers``). The goal:
p99 at least 30% lower and at least 40% fewer prompt tokens computed with picking.

``--kill`` kills one replica part-way (``--kill-after`` seconds into each mode); with
picking, no request may fail (streams ask for ``X-Switchyard-Continue-Streams``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402

from tests.bench import balance_workload  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402
from tests.support.servers import RouterServer, free_port, write_table  # noqa: E402
from tests.support.spread import ServiceSpread  # noqa: E402
from tests.support.tables import KEY, model, provider, table  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Counts:
    """What one replica did in a mode."""

    computed: int = 0  # prompt tokens computed (not found in its cache)
    cached: int = 0  # prompt tokens found in its cache
    requests: int = 0


class Replicas(Protocol):
    ports: list[int]

    def start(self) -> None: ...
    def warm(self, system: str) -> None: ...
    def stop(self) -> None: ...
    def kill(self, i: int) -> None: ...
    def counts(self) -> list[Counts]: ...


class Fakes:
    """Fake vLLM replicas: one slot, a modest prefix cache, a prefill cost per token."""

    def __init__(self, n: int, prefill: float, cache_tokens: int) -> None:
        self.n, self.prefill, self.cache_tokens = n, prefill, cache_tokens
        self.servers: list[FakeModelServer] = []
        self.ports: list[int] = []

    def start(self) -> None:
        self.servers = [
            FakeModelServer(
                slots=1,
                prefill_per_token=self.prefill,
                decode_per_token=0.002,
                cache_tokens=self.cache_tokens,
            ).start()
            for _ in range(self.n)
        ]
        self.ports = [s.port for s in self.servers]

    def warm(self, system: str) -> None:
        """Nothing: a fake's prefix cache is the server's, as vLLM's is; the system prompt
        is computed once per replica in either mode."""

    def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(Exception):
                s.stop()

    def kill(self, i: int) -> None:
        self.servers[i].kill()  # every connection cut at once, streams under way included

    def counts(self) -> list[Counts]:
        return [Counts(s.computed_tokens, s.cached_tokens, s.served) for s in self.servers]


class Counter:
    """A pass-through in front of one server that counts the chat calls sent to it
    (llama.cpp's metrics have no request counter)."""

    MARK = b"POST /v1/chat/completions "

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: int) -> None:
        self.loop, self.backend = loop, backend
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            tail = b""
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if count:
                        seen = tail + data
                        self.requests += seen.count(self.MARK)
                        tail = seen[-(len(self.MARK) - 1) :]
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.difference_update((writer, up_writer))


def llamacpp_counters(text: str) -> dict[str, float]:
    """Every ``llamacpp:`` sample of a llama.cpp server's ``/metrics`` (they carry no
    labels), by name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:"):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def _llamacpp_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return llamacpp_counters(r.read().decode())


class LlamaCpp:
    """N ``switchyard local-model`` processes, each behind a counting pass-through."""

    def __init__(self, n: int, parallel: int, work: Path) -> None:
        self.n, self.parallel, self.work = n, parallel, work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.backends: list[int] = []
        self.counters: list[Counter] = []
        self.ports: list[int] = []
        self.last: list[dict[str, float]] = []
        self.before: list[dict[str, float]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def start(self) -> None:
        self.backends = [free_port() for _ in range(self.n)]
        for port in self.backends:
            log = (self.work / f"llamacpp-{port}.log").open("wb")
            cmd = [sys.executable, "-m", "switchyard.cli", "local-model", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--threads", "1", "--parallel", str(self.parallel)]
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        for proc, port in zip(self.procs, self.backends, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"local-model on {port} exited; see {self.work}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"local-model on {port} did not start") from None
                    time.sleep(0.2)
        self.counters = [Counter(self._loop, port) for port in self.backends]
        for c in self.counters:
            c.start()
        self.ports = [c.port for c in self.counters]
        self.before = [_llamacpp_metrics(p) for p in self.backends]
        self.last = list(self.before)

    def warm(self, system: str) -> None:
        """Every slot holds the system prompt (``balance_workload.warm_slots``), sent to
        the servers directly: neither counted as requests nor as computed tokens."""
        roots = [f"http://127.0.0.1:{port}" for port in self.backends]
        balance_workload.warm_slots(roots, self.parallel, system)
        self.before = [_llamacpp_metrics(p) for p in self.backends]
        self.last = list(self.before)

    def stop(self) -> None:
        for c in self.counters:
            with contextlib.suppress(Exception):
                c.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def kill(self, i: int) -> None:
        with contextlib.suppress(OSError):
            self.last[i] = _llamacpp_metrics(self.backends[i])
        os.kill(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(5)
        self.counters[i].stop()

    def counts(self) -> list[Counts]:
        out = []
        for i, port in enumerate(self.backends):
            if self.procs[i].poll() is None:
                self.last[i] = _llamacpp_metrics(port)
            after, before = self.last[i], self.before[i]
            computed = (
                after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"]
            )
            cached = (
                after["llamacpp:prompt_tokens_cached_total"]
                - before["llamacpp:prompt_tokens_cached_total"]
            )
            out.append(Counts(int(computed), int(cached), self.counters[i].requests))
        return out


@dataclass
class ModeResult:
    name: str
    results: balance_workload.Results
    counts: list[Counts]
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    killed_at: float | None = None

    @property
    def computed(self) -> int:
        return sum(c.computed for c in self.counts)

    @property
    def cached(self) -> int:
        return sum(c.cached for c in self.counts)


def _doc(base_url: str, model_name: str, endpoints: list[str] | None) -> dict[str, Any]:
    extra = {"endpoints": endpoints} if endpoints is not None else {}
    return table(
        [provider("pool", "vllm", base_url, **extra)],
        [model("bench", "pool", model_name, contextWindow=8192, maxOutputTokens=512)],
    )


def run_mode(
    name: str,
    replicas: Replicas,
    picking: bool,
    model_name: str,
    workload: dict[str, Any],
    work: Path,
    kill_after: float | None,
) -> ModeResult:
    replicas.start()
    replicas.warm(balance_workload.system_prompt(workload["system_words"]))
    spread: ServiceSpread | None = None
    gw: RouterServer | None = None
    killed: list[float] = []
    try:
        if picking:
            addresses = [f"127.0.0.1:{p}" for p in replicas.ports]
            doc = _doc("http://cluster.invalid:8000/v1", model_name, addresses)
        else:
            spread = ServiceSpread(replicas.ports).start()
            doc = _doc(f"http://{spread.address}/v1", model_name, None)
        path = work / f"table-{name}.yaml"
        write_table(path, doc)
        gw = RouterServer(path).start()
        url = f"{gw.url}/v1"

        def client() -> openai.OpenAI:
            return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=300)

        def during(elapsed: float) -> None:
            if kill_after is not None and not killed and elapsed >= kill_after:
                killed.append(elapsed)
                replicas.kill(1)

        results = balance_workload.run(client, "bench", during=during, **workload)
        r = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH, timeout=10)
        r.raise_for_status()
        endpoints = r.json()["providers"][0].get("endpoints") or []
        counts = replicas.counts()
    finally:
        if gw is not None:
            gw.stop()
        if spread is not None:
            spread.stop()
        replicas.stop()
    return ModeResult(name, results, counts, endpoints, killed[0] if killed else None)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def report(base: ModeResult, pick: ModeResult) -> None:
    rows = [base, pick]
    print(
        f"\n{'mode':<22}{'requests':>9}{'failed':>7}{'TTFT p50 ms':>12}{'TTFT p99 ms':>12}"
        f"{'computed tok':>13}{'cached tok':>11}{'elapsed s':>10}   requests per replica"
    )
    for m in rows:
        res = m.results
        print(
            f"{m.name:<22}{res.requests:>9}{len(res.failures):>7}"
            f"{res.percentile(50) * 1000:>12.0f}{res.percentile(99) * 1000:>12.0f}"
            f"{m.computed:>13}{m.cached:>11}{res.elapsed:>10.1f}   "
            + " ".join(str(c.requests) for c in m.counts)
        )
    b, p = base.results, pick.results
    print(
        f"{'picking / baseline':<22}{'':>9}{'':>7}"
        f"{_ratio(p.percentile(50), b.percentile(50)):>12}"
        f"{_ratio(p.percentile(99), b.percentile(99)):>12}"
        f"{_ratio(pick.computed, base.computed):>13}{_ratio(pick.cached, base.cached):>11}"
        f"{_ratio(p.elapsed, b.elapsed):>10}"
    )
    p99_cut = 1 - p.percentile(99) / b.percentile(99)
    computed_cut = 1 - pick.computed / base.computed if base.computed else 0.0
    print(
        f"\ngoal: TTFT p99 at least 30% lower: {p99_cut:.0%} "
        f"({'met' if p99_cut >= 0.30 else 'not met'}); "
        f"computed prompt tokens at least 40% fewer: {computed_cut:.0%} "
        f"({'met' if computed_cut >= 0.40 else 'not met'})"
    )
    hits = sum(e.get("affinityHits", 0) for e in pick.endpoints)
    picks = sum(e.get("picks", 0) for e in pick.endpoints)
    print(f"affinity hits / picks (router's providers API): {hits} / {picks}")
    for e in pick.endpoints:
        print(
            f"  {e['address']:<18} state {e['state']:<4} picks {e['picks']:>4}  "
            f"affinity hits {e['affinityHits']:>4}  failures {e['consecutiveFailures']}"
        )
    for m in rows:
        slowest = ", ".join(
            f"{what} ({at:.1f} s in) {ttft * 1000:.0f} ms"
            for what, at, ttft in m.results.slowest(3)
        )
        print(f"slowest, {m.name}: {slowest}")
    for m in rows:
        if m.killed_at is not None:
            print(f"{m.name}: replica 2 killed {m.killed_at:.1f} s in; failures:")
        for failure in m.results.failures[:10]:
            print(f"  {m.name}: {failure}")


def ascii_chart(base: ModeResult, pick: ModeResult) -> None:
    metrics = [
        ("TTFT p50 ms", base.results.percentile(50) * 1000, pick.results.percentile(50) * 1000),
        ("TTFT p99 ms", base.results.percentile(99) * 1000, pick.results.percentile(99) * 1000),
        ("computed tokens", base.computed, pick.computed),
    ]
    print()
    for label, b, p in metrics:
        top = max(b, p) or 1
        for name, v in (("baseline", b), ("picking", p)):
            print(f"{label:<16}{name:<9}{'#' * round(40 * v / top):<40} {v:.0f}")


def plot(base: ModeResult, pick: ModeResult, title: str, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        ascii_chart(base, pick)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    panels = [
        ("TTFT p50 (ms)", base.results.percentile(50) * 1000, pick.results.percentile(50) * 1000),
        ("TTFT p99 (ms)", base.results.percentile(99) * 1000, pick.results.percentile(99) * 1000),
        ("prompt tokens computed", base.computed, pick.computed),
    ]
    for ax, (label, b, p) in zip(axes, panels, strict=True):
        bars = ax.bar(["Service", "picking"], [b, p], color=["tab:gray", "tab:blue"])
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(label)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = ap.add_mutually_exclusive_group()
    target.add_argument("--fakes", action="store_true", help="fake vLLM replicas (default)")
    target.add_argument("--llamacpp", type=int, metavar="N", help="N real llama.cpp servers")
    target.add_argument(
        "--node", type=int, metavar="N", help="a real node: the chart's llama.cpp at N replicas"
    )
    ap.add_argument(
        "--parallel",
        type=int,
        default=4,
        help="llama.cpp slots per server: as many as the conversations it holds at once",
    )
    ap.add_argument("--kill", action="store_true", help="kill one replica part-way")
    ap.add_argument("--kill-after", type=float, help="seconds into each mode (with --kill)")
    ap.add_argument("--conversations", type=int)
    ap.add_argument("--turns", type=int)
    ap.add_argument("--oneoffs", type=int)
    ap.add_argument("--system-words", type=int)
    ap.add_argument("--document-words", type=int)
    ap.add_argument("--think", type=float)
    ap.add_argument("--stagger", type=float, help="seconds between conversations' starts")
    ap.add_argument(
        "--oneoff-every", type=float, help="seconds between one-offs, sent open loop (0: in turn)"
    )
    ap.add_argument("--plot", type=Path, help="default bench-results/balance-<target>.png")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="switchyard-balance-"))
    llama: LlamaCpp | None = None
    replicas: Replicas | None = None  # --node: the node's pods
    workload: dict[str, Any]
    if args.node:
        if args.node < 2:
            ap.error("--node takes 2 or more replicas")
        model_name = ""
        # A ~310-token system prompt and ~200-token logs; a conversation begins every
        # 4 s and a one-off every 3 s, open loop: both pods busy, neither swamped, on a
        # machine that also runs the node, two routers and the client.
        workload = dict(
            conversations=8, turns=6, oneoffs=12, system_words=300, document_words=40,
            max_tokens=8, think=0.2, stagger=4.0, oneoff_every=3.0,
        )  # fmt: skip
        kill_after = 15.0
        title = (
            f"a node: the chart's llama.cpp at {args.node} replicas "
            f"(1 thread, {args.parallel} slots each)"
        )
        name = f"node{args.node}"
    elif args.llamacpp:
        if args.llamacpp < 2:
            ap.error("--llamacpp takes 2 or more servers")
        llama = LlamaCpp(args.llamacpp, args.parallel, work)
        replicas = llama
        model_name = "smollm2-135m"
        # About 300 prompt tokens shared, 250 per conversation: llama.cpp on one thread
        # computes some 120-140 prompt tokens a second.
        workload = dict(
            conversations=8, turns=6, oneoffs=12, system_words=300, document_words=40,
            max_tokens=8, think=0.2, stagger=3.0, oneoff_every=2.0,
        )  # fmt: skip
        kill_after = 10.0
        title = f"{args.llamacpp} llama.cpp servers (SmolLM2-135M, 1 thread, {args.parallel} slots)"
        name = f"llamacpp{args.llamacpp}"
    else:
        # Prefill at 5,000 tokens a second: an uncached conversation start (~2,900
        # tokens) costs 0.6 s; the cache holds the system prompt and a few conversations.
        replicas = Fakes(3, prefill=0.0002, cache_tokens=8000)
        model_name = "meta-llama/Llama-3.1-8B-Instruct"
        workload = dict(
            conversations=12, turns=6, oneoffs=30, system_words=1100, document_words=500,
            max_tokens=8, think=0.05, stagger=0.2,
        )  # fmt: skip
        kill_after = 1.0
        title = "3 fake vLLM replicas (1 slot, prefill 0.2 ms/token, 8,000-token cache)"
        name = "fakes"
    for key in (
        "conversations",
        "turns",
        "oneoffs",
        "system_words",
        "document_words",
        "think",
        "stagger",
        "oneoff_every",
    ):
        if getattr(args, key) is not None:
            workload[key] = getattr(args, key)
    if args.kill_after is not None:
        kill_after = args.kill_after
    kill = kill_after if args.kill else None

    print(f"{title}; workload {workload}" + (f"; kill at {kill} s" if kill else ""), flush=True)
    try:
        if replicas is None:
            from tests.bench import balance_node

            base, pick = balance_node.run(args.node, workload, kill, args.parallel)
        else:
            base = run_mode("baseline (Service)", replicas, False, model_name, workload, work, kill)
            print(f"baseline done in {base.results.elapsed:.1f} s", flush=True)
            pick = run_mode("picking (endpoints)", replicas, True, model_name, workload, work, kill)
            print(f"picking done in {pick.results.elapsed:.1f} s", flush=True)
    finally:
        if llama is not None:
            llama.stop()
            llama.close()
        shutil.rmtree(work, ignore_errors=True)
    report(base, pick)
    plot(base, pick, title, args.plot or ROOT / "bench-results" / f"balance-{name}.png")
    return 1 if args.kill and pick.results.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
