"""Availability under faults: one model group on three providers, the primary broken
in every way a provider breaks, under a steady open-loop load.

    ./dev bench chaos [--rate 100] [--fault-seconds 30] [--recovery-seconds 20]
                      [--faults refused,http500,...] [--continue-streams]
                      [--plot bench-results/chaos.png]

Three faithful fakes (OpenAI as the primary, vLLM, Anthropic) run in a process of
their own; the router in another, with its default settings but for a 5 s breaker
cooldown (30 s by default), so that traffic is back on the primary before the next
fault. Requests arrive at a
fixed rate whatever the answers do (half of them streams), each with a 10 s client
timeout. After a quiet baseline, each fault hits the primary for ``--fault-seconds``
and is then lifted for ``--recovery-seconds``; the last fault hits two providers.

Per fault it prints the share of requests that succeeded (plain, and streams: a
stream that failed before its first byte counts as failed; one that broke after it
is counted apart), the latency added to the baseline's p50/p99, how long after the
fault began the primary's breaker opened, and how long after it was lifted traffic
reached the primary again; then what was spent on calls that did not answer their
request (hedges that lost), from the router's usage records. It writes a PNG:
success rate and latency over time, with the faults shaded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench.run_bench import KEY, admin_port, free_port, router_process, wait_http  # noqa: E402
from tests.bench.spend import spend  # noqa: E402
from tests.fakes import FakeAnthropic, FakeOpenAI, FakeVLLM, Fault  # noqa: E402

PROVIDER_KEY = "test-key"
CLIENT_TIMEOUT = 10.0
#: How long a mid-stream stall or a stall before the headers lasts: longer than a phase.
LONG = 3600.0

#: name → (what it does to the primary, described)
FAULTS: dict[str, tuple[list[tuple[str, Fault | None]], str]] = {
    "refused": ([], "connection refused (the primary's process is gone)"),
    "http500": ([("primary", Fault.error(500))], "every call answers 500"),
    "429-retry-after": (
        [("primary", Fault.error(429, retry_after=10))],
        "429 with Retry-After: 10",
    ),
    "429-bare": ([("primary", Fault.error(429))], "429 without Retry-After"),
    "stall-headers": ([("primary", Fault.stall(LONG))], "stall before the headers"),
    "stall-mid-stream": (
        [("primary", Fault.stall_mid(2, LONG))],
        "stall after 2 chunks (plain: after half the body)",
    ),
    "cut": ([("primary", Fault.cut(2))], "connection cut after 2 chunks / half the body"),
    "malformed": ([("primary", Fault.malformed())], "200 with broken JSON"),
    "trickle": ([("primary", Fault.trickle(3.0))], "answers trickle out over 3 s"),
    "two-down": (
        [("primary", Fault.error(500)), ("secondary", Fault.error(503))],
        "primary 500 and secondary 503 at once",
    ),
}


# -- the fakes, in a process of their own -------------------------------------------
def serve_fakes(conn: Connection) -> None:
    fakes = {
        "primary": FakeOpenAI(api_key=PROVIDER_KEY, chunk_delay=0.01),
        "secondary": FakeVLLM(api_key=PROVIDER_KEY, chunk_delay=0.01),
        "tertiary": FakeAnthropic(api_key=PROVIDER_KEY, chunk_delay=0.01),
    }
    for fake in fakes.values():
        fake.start()
    conn.send({name: fake.url for name, fake in fakes.items()})
    while True:
        command, name, fault = conn.recv()
        if command == "quit":
            break
        fake = fakes[name]
        if command == "fault":
            fake.set_default(fault)
        elif command == "stop":
            fake.stop()
        elif command == "start":
            fake.start()
        conn.send("ok")
    # Stalled answers are still sleeping in the fakes: nothing is worth waiting for.
    os._exit(0)


def table(urls: dict[str, str], continue_streams: bool) -> dict[str, Any]:
    key = {"env": "SY_CHAOS_PROVIDER_KEY"}
    common = {
        "name": "chat",
        "contextWindow": 128000,
        "maxOutputTokens": 4096,
        "supportsStreaming": True,
    }
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": [
            {
                "name": "primary",
                "providerType": "openai",
                "baseUrl": urls["primary"],
                "apiKey": key,
                "priority": 1,
            },
            {
                "name": "secondary",
                "providerType": "vllm",
                "baseUrl": urls["secondary"],
                "apiKey": key,
                "priority": 2,
            },
            {
                "name": "tertiary",
                "providerType": "anthropic",
                "baseUrl": urls["tertiary"],
                "apiKey": key,
                "priority": 3,
            },
        ],
        "models": [
            {
                **common,
                "provider": "primary",
                "modelName": "gpt-4o-mini",
                "inputPricePer1MTokens": "0.15",
                "outputPricePer1MTokens": "0.60",
            },
            {
                **common,
                "provider": "secondary",
                "modelName": "meta-llama/Llama-3.1-8B-Instruct",
                "inputPricePer1MTokens": "0.10",
                "outputPricePer1MTokens": "0.10",
            },
            {
                **common,
                "provider": "tertiary",
                "modelName": "claude-haiku-4-5",
                "inputPricePer1MTokens": "1.00",
                "outputPricePer1MTokens": "5.00",
            },
        ],
        "apiKeys": [{"name": "chaos", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
        # The response cache would answer repeats without any provider.
        "cache": {"enabled": False},
        # A short cooldown, so that traffic is back on the primary before the next fault.
        "routing": {
            # The fakes of the cloud providers listen on loopback.
            "providerNetworks": {"allowCIDRs": ["127.0.0.0/8"]},
            "breaker": {"failureThreshold": 5, "cooldownSeconds": 5},
            "continueStreams": continue_streams,
        },
    }


# -- the load ---------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    sent: float  # seconds since the run began
    latency: float
    stream: bool
    ok: bool
    provider: str | None
    broke_mid_stream: bool = False
    continued: bool = False  # broke mid-way, and another provider finished it
    error: str | None = None


async def one(session: aiohttp.ClientSession, url: str, stream: bool, i: int, t0: float) -> Outcome:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": f"request {i}: say something short"}],
        "max_tokens": 64,
        "stream": stream,
    }
    started = time.perf_counter()
    sent = started - t0
    got: list[bytes] = []
    try:
        async with session.post(url, json=body) as resp:
            provider = resp.headers.get("x-switchyard-provider")
            async for block in resp.content.iter_any():
                got.append(block)
            raw = b"".join(got)
            latency = time.perf_counter() - started
            if resp.status != 200:
                return Outcome(sent, latency, stream, False, provider, error=f"HTTP {resp.status}")
            if stream:
                text = raw.decode("utf-8", "replace")
                complete = text.rstrip().endswith("data: [DONE]") and '"error"' not in text
                return Outcome(
                    sent,
                    latency,
                    stream,
                    complete,
                    provider,
                    broke_mid_stream=not complete,
                    continued='"continued_from"' in text,
                    error=None if complete else "stream broke after its first byte",
                )
            return Outcome(sent, latency, stream, True, provider)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # A stream that had sent something broke after its first byte.
        return Outcome(
            sent,
            time.perf_counter() - started,
            stream,
            False,
            None,
            broke_mid_stream=stream and bool(got),
            error=type(exc).__name__,
        )


@dataclass(slots=True)
class Phase:
    name: str
    start: float
    end: float  # the fault is lifted
    opened: float | None = None  # the primary's breaker first seen open (since start)
    returned: float | None = None  # the primary served again (since end)
    outcomes: list[Outcome] = field(default_factory=list)


async def watch_breaker(
    session: aiohttp.ClientSession, url: str, t0: float, seen: list[tuple[float, str]]
) -> None:
    """The primary's breaker state, every 50 ms."""
    while True:
        try:
            async with session.get(url) as resp:
                listing = (await resp.json())["providers"]
            state = {p["name"]: p["circuitBreaker"] for p in listing}["primary"]
            seen.append((time.perf_counter() - t0, state))
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.05)


class Driver:
    def __init__(self, conn: Connection, gw: str, rate: float) -> None:
        self.conn = conn
        self.gw = gw
        self.rate = rate
        self.outcomes: list[Outcome] = []
        self.breaker: list[tuple[float, str]] = []

    def command(self, command: str, name: str, fault: Fault | None = None) -> None:
        self.conn.send((command, name, fault))
        self.conn.recv()

    def apply(self, name: str) -> None:
        if name == "refused":
            self.command("stop", "primary")
        for provider, fault in FAULTS[name][0]:
            self.command("fault", provider, fault)

    def lift(self, name: str) -> None:
        if name == "refused":
            self.command("start", "primary")
        for provider, _ in FAULTS[name][0]:
            self.command("fault", provider, None)

    async def run(
        self, faults: list[str], baseline: float, fault_s: float, recovery_s: float
    ) -> tuple[list[Phase], float]:
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=0)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            t0 = time.perf_counter()
            watcher = asyncio.ensure_future(
                watch_breaker(session, f"{self.gw}/api/v1/llm/providers", t0, self.breaker)
            )
            phases = [Phase("baseline", 0.0, baseline)]
            at = baseline
            for name in faults:
                phases.append(Phase(name, at, at + fault_s))
                at += fault_s + recovery_s
            total = at
            load = asyncio.ensure_future(self.load(session, t0, total))
            for phase in phases[1:]:
                await asyncio.sleep(max(0.0, phase.start - (time.perf_counter() - t0)))
                await asyncio.to_thread(self.apply, phase.name)
                print(f"  {time.perf_counter() - t0:6.1f} s  {phase.name}", flush=True)
                await asyncio.sleep(max(0.0, phase.end - (time.perf_counter() - t0)))
                await asyncio.to_thread(self.lift, phase.name)
            await load
            watcher.cancel()
        return phases, total

    async def load(self, session: aiohttp.ClientSession, t0: float, total: float) -> None:
        url = f"{self.gw}/v1/chat/completions"
        tasks: list[asyncio.Future[Outcome]] = []
        i = 0
        while True:
            due = i / self.rate
            if due >= total:
                break
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(session, url, i % 2 == 1, i, t0)))
            i += 1
        self.outcomes = list(await asyncio.gather(*tasks))


# -- the report -------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def assign(phases: list[Phase], outcomes: list[Outcome], breaker: list[tuple[float, str]]) -> None:
    for o in outcomes:
        for phase in reversed(phases):
            if o.sent >= phase.start:
                phase.outcomes.append(o)
                break
    for phase in phases[1:]:
        # The first opening after the fault began (a breaker still open from the fault
        # before would say nothing about this one).
        was_closed = False
        phase.opened = None
        for t, s in breaker:
            if t < phase.start:
                continue
            if s == "closed":
                was_closed = True
            elif was_closed or t - phase.start < 0.06:
                phase.opened = t - phase.start
                break
        if phase.opened is not None and phase.opened > phase.end - phase.start:
            phase.opened = None
        back = [o.sent for o in outcomes if o.sent >= phase.end and o.provider == "primary"]
        phase.returned = min(back) - phase.end if back else None


def report(phases: list[Phase], rate: float) -> list[dict[str, Any]]:
    base = phases[0]
    base_plain = [o.latency for o in base.outcomes if not o.stream and o.ok]
    base_stream = [o.latency for o in base.outcomes if o.stream and o.ok]
    b50, b99 = pct(base_plain, 0.5), pct(base_plain, 0.99)
    s50, s99 = pct(base_stream, 0.5), pct(base_stream, 0.99)
    print(
        f"\nopen-loop load: {rate:g} requests/s, half streams; client timeout {CLIENT_TIMEOUT:g} s"
    )
    print(
        f"baseline: plain p50 {b50 * 1000:.1f} ms, p99 {b99 * 1000:.1f} ms; "
        f"stream p50 {s50 * 1000:.1f} ms, p99 {s99 * 1000:.1f} ms "
        f"({len(base.outcomes)} requests, {sum(not o.ok for o in base.outcomes)} failed)\n"
    )
    head = (
        f"{'fault':<18}{'plain ok':>11}{'+p50':>8}{'+p99':>8}{'streams ok':>12}"
        f"{'failed<1st':>11}{'broke':>7}{'cont.':>7}{'+p50':>8}{'+p99':>8}{'open at':>9}"
        f"{'back in':>9}"
    )
    print(head)
    print("-" * len(head))
    rows = []
    for phase in phases[1:]:
        plain = [o for o in phase.outcomes if not o.stream]
        streams = [o for o in phase.outcomes if o.stream]
        plain_ok = [o.latency for o in plain if o.ok]
        stream_ok = [o.latency for o in streams if o.ok]
        row = {
            "fault": phase.name,
            "what": FAULTS[phase.name][1],
            "plain": len(plain),
            "plain_ok": len(plain_ok),
            "plain_p50": (pct(plain_ok, 0.5) - b50) * 1000,
            "plain_p99": (pct(plain_ok, 0.99) - b99) * 1000,
            "streams": len(streams),
            "streams_ok": len(stream_ok),
            "failed_before_first_byte": sum(not o.ok and not o.broke_mid_stream for o in streams),
            "broke": sum(o.broke_mid_stream for o in streams),
            "continued": sum(o.continued for o in streams),
            "stream_p50": (pct(stream_ok, 0.5) - s50) * 1000,
            "stream_p99": (pct(stream_ok, 0.99) - s99) * 1000,
            "opened": phase.opened,
            "returned": phase.returned,
        }
        rows.append(row)
        print(
            f"{phase.name:<18}{_share(row['plain_ok'], row['plain']):>11}"
            f"{row['plain_p50']:>7.0f} {row['plain_p99']:>7.0f} "
            f"{_share(row['streams_ok'], row['streams']):>11}"
            f"{row['failed_before_first_byte']:>11}{row['broke']:>7}{row['continued']:>7}"
            f"{row['stream_p50']:>7.0f} {row['stream_p99']:>7.0f} "
            f"{_seconds(phase.opened):>8}{_seconds(phase.returned):>9}"
        )
    print(
        "\n+p50/+p99: ms added to the baseline's, over the requests that succeeded; "
        "failed<1st: streams that failed before their first byte; broke: after it; "
        "cont.: streams that broke and were finished by another provider; "
        "open at: the primary's breaker first seen open, after the fault began; "
        "back in: the first request the primary served after the fault was lifted."
    )
    errors: dict[str, int] = {}
    for phase in phases[1:]:
        for o in phase.outcomes:
            if not o.ok:
                key = f"{phase.name}: {o.error}"
                errors[key] = errors.get(key, 0) + 1
    if errors:
        print("\nfailures:")
        for key, n in sorted(errors.items()):
            print(f"  {n:6d}  {key}")
    return rows


def _share(ok: int, n: int) -> str:
    return f"{100 * ok / n:.2f}%" if n else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def plot(phases: list[Phase], outcomes: list[Outcome], total: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = int(total) + 1
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 7), sharex=True)
    for stream, label, colour in ((False, "plain", "tab:blue"), (True, "stream", "tab:orange")):
        by_second: list[list[Outcome]] = [[] for _ in range(bins)]
        for o in outcomes:
            if o.stream == stream:
                by_second[int(o.sent)].append(o)
        xs = [s for s in range(bins) if by_second[s]]
        rate = [100 * sum(o.ok for o in by_second[s]) / len(by_second[s]) for s in xs]
        top.plot(xs, rate, label=f"{label}: success %", color=colour, lw=1.2)
        p50 = [statistics.median([o.latency for o in by_second[s]]) * 1000 for s in xs]
        p99 = [pct([o.latency for o in by_second[s]], 0.99) * 1000 for s in xs]
        bottom.plot(xs, p50, color=colour, lw=1, label=f"{label} p50")
        bottom.plot(xs, p99, color=colour, lw=1, ls="--", label=f"{label} p99")
    for phase in phases[1:]:
        for ax in (top, bottom):
            ax.axvspan(phase.start, phase.end, color="tab:red", alpha=0.12)
        top.text(
            (phase.start + phase.end) / 2, 101, phase.name, ha="center", va="bottom", fontsize=7
        )
    top.set_ylabel("requests that succeeded (%)")
    top.set_ylim(min(90, top.get_ylim()[0]), 104)
    top.legend(loc="lower left", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms), per second sent")
    bottom.set_xlabel("seconds into the run (faults on the primary shaded)")
    bottom.legend(loc="upper left", fontsize=8, ncol=2)
    fig.suptitle("Switchyard under provider faults: one model group on three providers")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--baseline-seconds", type=float, default=15.0)
    ap.add_argument("--fault-seconds", type=float, default=30.0)
    ap.add_argument("--recovery-seconds", type=float, default=20.0)
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench-results" / "chaos.png")
    ap.add_argument(
        "--continue-streams",
        action="store_true",
        help="routing.continueStreams: a stream that breaks mid-way goes on elsewhere",
    )
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        ap.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    fakes = ctx.Process(target=serve_fakes, args=(child,), daemon=True)
    fakes.start()
    urls = parent.recv()
    work = Path(tempfile.mkdtemp(prefix="sy-chaos-"))
    (work / "table.yaml").write_text(yaml.safe_dump(table(urls, args.continue_streams)))
    port = free_port()
    router = router_process(
        str(work / "table.yaml"),
        port,
        "--state-dir",
        str(work / "state"),
        env=dict(os.environ, SY_CHAOS_PROVIDER_KEY=PROVIDER_KEY),
    )
    try:
        gw = f"http://127.0.0.1:{port}"
        wait_http(f"http://127.0.0.1:{admin_port(port)}/healthz")
        driver = Driver(parent, gw, args.rate)
        print(
            f"chaos: {len(faults)} faults x {args.fault_seconds:g} s, "
            f"{args.recovery_seconds:g} s to recover after each, at {args.rate:g} requests/s"
            + (", streams continued when they break" if args.continue_streams else "")
        )
        phases, total = asyncio.run(
            driver.run(faults, args.baseline_seconds, args.fault_seconds, args.recovery_seconds)
        )
        assign(phases, driver.outcomes, driver.breaker)
        report(phases, args.rate)
        time.sleep(1.5)  # the last records are written a moment after their answers
        print("\n" + spend(work / "state").line())
        plot(phases, driver.outcomes, total, args.plot)
    finally:
        router.terminate()
        router.wait(10)
        parent.send(("quit", "", None))
        fakes.join(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
