"""Cost savings, replayed: what routing by task, capability and price saves against
sending everything to the organization's default model.

    ./dev bench cost [--requests 10000] [--seed 7] [--plot bench-results/cost.png]

The table holds the models of ``examples/prices.yaml`` (current Anthropic and OpenAI
models at their list prices, and an in-cluster Llama on vLLM) on three faithful fakes,
with the task types each model is declared best for. The replay is shaped like an
engineering organization's traffic: the brief's task types; prompts from a few dozen
tokens to long-context documents; a share that needs function calling, or a long
answer; and repeats of deterministic requests that the response cache can answer.
Requests name no model (``model: auto``) and give their task type; the router chooses.

The baseline is every request sent to the default model (Claude Sonnet 5.5), priced
with the same token counts. The saving is split into what selection saved (each request
priced on the model that served it, or that first served it for a cache hit) and what
the cache saved (hits cost nothing). A capability violation is a request served by a
model that cannot take its tools, its prompt with its output, or its output length,
checked against the price file independently of the router; there must be none. The
router's own usage report must agree with the cost the replay adds up, and with what
its records say went on calls that did not answer their request (hedges that lost).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench.run_bench import KEY, admin_port, free_port, router_process, wait_http  # noqa: E402
from tests.bench.spend import Spend, spend  # noqa: E402
from tests.fakes import FakeAnthropic, FakeOpenAI, FakeVLLM  # noqa: E402

PRICES = ROOT / "examples" / "prices.yaml"
PROVIDER_KEY = "test-key"
DEFAULT_MODEL = "claude-sonnet-5-5"
MILLION = Decimal(1_000_000)

#: task → (share of traffic, the models the table declares best for it)
TASKS: dict[str, tuple[float, list[str]]] = {
    "code_analysis": (0.20, ["claude-sonnet-5-5", "gpt-5.4", "claude-opus-5-5"]),
    "test_generation": (0.15, ["gpt-5.4-mini", "claude-haiku-4-5"]),
    "documentation": (0.15, ["gpt-5.4-mini", "llama-3.1-8b"]),
    "summarize": (0.20, ["llama-3.1-8b", "gpt-5.4-nano"]),
    "chat": (0.20, ["llama-3.1-8b", "gpt-5.4-nano", "claude-haiku-4-5"]),
    "translate": (0.10, ["gpt-5.4-nano", "llama-3.1-8b"]),
}
#: Each word is three bytes ("ab "): one token to the router's estimate (bytes / 3) and
#: to the fakes' count (one per word), so the replay's sizes mean what they say.
SYLLABLES = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass(slots=True)
class Ask:
    index: int
    task: str
    prompt_words: int
    max_tokens: int
    tools: bool
    temperature: float
    seed: int  # the prompt's text; a repeat reuses its original's


@dataclass(slots=True)
class Answer:
    ask: Ask
    model: str  # the table model that served it (for a hit: that first served it)
    cached: bool
    prompt_tokens: int
    completion_tokens: int
    clamped: bool


# -- the workload ---------------------------------------------------------------
def workload(n: int, seed: int) -> list[Ask]:
    rng = random.Random(seed)
    tasks = list(TASKS)
    weights = [TASKS[t][0] for t in tasks]
    asks: list[Ask] = []
    deterministic: list[Ask] = []
    for i in range(n):
        if deterministic and rng.random() < 0.15:
            # A repeat of a deterministic request: CI re-running a job, a user asking again.
            original = rng.choice(deterministic)
            asks.append(
                Ask(
                    i,
                    original.task,
                    original.prompt_words,
                    original.max_tokens,
                    original.tools,
                    0.0,
                    original.seed,
                )
            )
            continue
        task = rng.choices(tasks, weights)[0]
        size = rng.random()
        if size < 0.60:
            words = rng.randint(30, 500)
        elif size < 0.90:
            words = rng.randint(500, 4_000)
        elif size < 0.98:
            words = rng.randint(4_000, 30_000)
        else:
            words = rng.randint(60_000, 250_000)  # a whole document or repository
        if task == "summarize":
            words *= 2  # what is summarized is long
        out = rng.choice([64, 128, 256, 512, 1024, 2048])
        if task == "documentation" and rng.random() < 0.10:
            out = rng.randint(10_000, 20_000)  # a long answer: a whole guide
        tools = task in ("chat", "code_analysis") and rng.random() < 0.25
        temperature = 0.0 if rng.random() < 0.30 else 0.7
        ask = Ask(i, task, words, out, tools, temperature, i)
        asks.append(ask)
        if temperature == 0.0:
            deterministic.append(ask)
    return asks


def prompt_text(ask: Ask) -> str:
    rng = random.Random(ask.seed)
    words = rng.choices(SYLLABLES, k=ask.prompt_words)
    return f"r{ask.seed} " + " ".join(words)


def body(ask: Ask) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": prompt_text(ask)}],
        "max_tokens": ask.max_tokens,
        "temperature": ask.temperature,
    }
    if ask.tools:
        b["tools"] = [WEATHER_TOOL]
    return b


# -- the table --------------------------------------------------------------------
def load_prices() -> dict[str, Any]:
    return dict(yaml.safe_load(PRICES.read_text()))


def table(prices: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    key = {"env": "SY_COST_PROVIDER_KEY"}
    types = {"anthropic": "anthropic", "openai": "openai", "in-cluster": "vllm"}
    providers = [
        {"name": name, "providerType": kind, "baseUrl": urls[name], "apiKey": key}
        for name, kind in types.items()
    ]
    models = []
    for m in prices["models"]:
        models.append(
            {
                "name": m["name"],
                "provider": m["provider"],
                "modelName": m["name"],
                "contextWindow": m["contextWindow"],
                "maxOutputTokens": m["maxOutputTokens"],
                "inputPricePer1MTokens": m["input"],
                "outputPricePer1MTokens": m["output"],
                "supportsFunctionCalling": m["functionCalling"],
                "supportsStreaming": True,
                "bestFor": [t for t, (_, best) in TASKS.items() if m["name"] in best],
            }
        )
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": providers,
        "models": models,
        "apiKeys": [
            {
                "name": "replay",
                "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                "scopes": ["completion", "usage:read"],
            }
        ],
        # Only a model that can give the whole answer is chosen; none is asked for less.
        "routing": {
            "clampMaxTokens": False,
            "maxBodyBytes": 8 * 1024 * 1024,
            # The fakes of the cloud providers listen on loopback.
            "providerNetworks": {"allowCIDRs": ["127.0.0.0/8"]},
        },
        "cache": {"enabled": True, "memoryEntries": 100_000},
    }


# -- the replay -------------------------------------------------------------------
async def replay(gw: str, asks: list[Ask], concurrency: int) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(asks)
    headers = {"Authorization": f"Bearer {KEY}"}
    queue: asyncio.Queue[Ask] = asyncio.Queue()
    for ask in asks:
        queue.put_nowait(ask)
    failures: Counter[str] = Counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            ask = queue.get_nowait()
            async with session.post(
                f"{gw}/v1/chat/completions",
                json=body(ask),
                headers={**headers, "x-switchyard-task": ask.task},
            ) as resp:
                data = await resp.json()
                if resp.status != 200:
                    failures[f"HTTP {resp.status}: {str(data)[:160]}"] += 1
                    continue
                usage = data["usage"]
                answers[ask.index] = Answer(
                    ask,
                    resp.headers["x-switchyard-model"],
                    resp.headers["x-switchyard-cache"] == "hit",
                    int(usage["prompt_tokens"]),
                    int(usage["completion_tokens"]),
                    "x-switchyard-max-tokens" in resp.headers,
                )

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if failures:
        for reason, n in failures.most_common(10):
            print(f"  failed {n:5d}: {reason}")
        raise SystemExit(f"{sum(failures.values())} requests failed")
    return [a for a in answers if a is not None]


def price(prices: dict[str, dict[str, Any]], model: str, a: Answer) -> Decimal:
    p = prices[model]
    return (
        Decimal(a.prompt_tokens) * Decimal(p["input"])
        + Decimal(a.completion_tokens) * Decimal(p["output"])
    ) / MILLION


def violations(prices: dict[str, dict[str, Any]], answers: list[Answer]) -> list[str]:
    found = []
    for a in answers:
        m = prices[a.model]
        ask = a.ask
        if ask.tools and not m["functionCalling"]:
            found.append(f"#{ask.index}: tools sent to {a.model}")
        if ask.max_tokens > m["maxOutputTokens"] or a.clamped:
            found.append(f"#{ask.index}: {ask.max_tokens} output tokens asked of {a.model}")
        if a.prompt_tokens + ask.max_tokens > m["contextWindow"]:
            found.append(
                f"#{ask.index}: {a.prompt_tokens} + {ask.max_tokens} tokens over {a.model}'s window"
            )
    return found


def plot(
    prices: dict[str, dict[str, Any]], answers: list[Answer], baseline: list[Decimal], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({a.model for a in answers}, key=lambda m: -float(prices[m]["output"]))
    running = {m: Decimal(0) for m in models}
    series: dict[str, list[float]] = {m: [] for m in models}
    total_base = Decimal(0)
    base_line: list[float] = []
    for a, base in zip(answers, baseline, strict=True):
        if not a.cached:
            running[a.model] += price(prices, a.model, a)
        total_base += base
        for m in models:
            series[m].append(float(running[m]))
        base_line.append(float(total_base))
    xs = range(1, len(answers) + 1)
    fig, ax = plt.subplots(figsize=(12, 6))
    ax.stackplot(xs, *[series[m] for m in models], labels=models, alpha=0.85)
    ax.plot(xs, base_line, color="black", lw=1.5, ls="--", label=f"baseline: all {DEFAULT_MODEL}")
    ax.set_xlabel("requests replayed")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Cost per model over the replay, against the default model for everything")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--plot", type=Path, default=ROOT / "bench-results" / "cost.png")
    args = ap.parse_args()

    price_file = load_prices()
    prices = {m["name"]: m for m in price_file["models"]}
    reply = " ".join(["word"] * 25_000)  # every answer is as long as max_tokens allows
    served = defaultdict(list)
    for m in price_file["models"]:
        served[m["provider"]].append(m["name"])
    fakes = {
        "anthropic": FakeAnthropic(api_key=PROVIDER_KEY, reply=reply, models=served["anthropic"]),
        "openai": FakeOpenAI(api_key=PROVIDER_KEY, reply=reply, models=served["openai"]),
        "in-cluster": FakeVLLM(api_key=PROVIDER_KEY, reply=reply, models=served["in-cluster"]),
    }
    for fake in fakes.values():
        fake.start()
    work = Path(tempfile.mkdtemp(prefix="sy-cost-"))
    doc = table(price_file, {name: fake.url for name, fake in fakes.items()})
    (work / "table.yaml").write_text(yaml.safe_dump(doc))
    port = free_port()
    router = router_process(
        str(work / "table.yaml"),
        port,
        "--state-dir",
        str(work / "state"),
        env=dict(os.environ, SY_COST_PROVIDER_KEY=PROVIDER_KEY),
    )
    try:
        gw = f"http://127.0.0.1:{port}"
        wait_http(f"http://127.0.0.1:{admin_port(port)}/healthz")
        asks = workload(args.requests, args.seed)
        print(
            f"cost: replaying {len(asks)} requests (seed {args.seed}), prices of "
            f"{price_file['asOf']} (examples/prices.yaml v{price_file['version']})"
        )
        started = time.perf_counter()
        answers = asyncio.run(replay(gw, asks, args.concurrency))
        took = time.perf_counter() - started
        report = asyncio.run(usage_report(gw, len(answers)))
        summarize(prices, answers, took, report, spend(work / "state"), args.plot)
    finally:
        router.terminate()
        router.wait(10)
        for fake in fakes.values():
            fake.stop()
    return 0


async def usage_report(gw: str, requests: int) -> dict[str, Any]:
    """The router's usage by model, once every request's record is written (records are
    written in batches, a moment after the answer)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(
                f"{gw}/api/v1/llm/usage",
                params={"groupBy": "model"},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as resp:
                report = dict(await resp.json())
            if report["totals"]["requests"] >= requests:
                break
            await asyncio.sleep(0.1)
        return report


def summarize(
    prices: dict[str, dict[str, Any]],
    answers: list[Answer],
    took: float,
    report: dict[str, Any],
    paid: Spend,
    plot_path: Path,
) -> None:
    default = prices[DEFAULT_MODEL]
    baseline = [price(prices, DEFAULT_MODEL, a) for a in answers]
    selected = [price(prices, a.model, a) for a in answers]
    actual = [Decimal(0) if a.cached else s for a, s in zip(answers, selected, strict=True)]
    b, s, c = sum(baseline, Decimal(0)), sum(selected, Decimal(0)), sum(actual, Decimal(0))
    tools = sum(a.ask.tools for a in answers)
    long_context = sum(a.prompt_tokens > 32_768 for a in answers)
    long_output = sum(a.ask.max_tokens > 8_192 for a in answers)
    hits = sum(a.cached for a in answers)
    print(
        f"  {len(answers)} answered in {took:.1f} s; {tools} needed function calling, "
        f"{long_context} a window over 32K, {long_output} an answer over 8K tokens; "
        f"{hits} answered by the cache"
    )
    print(
        f"\nbaseline (every request to {DEFAULT_MODEL}, ${default['input']}/"
        f"${default['output']} per 1M): ${b:,.2f}"
    )
    print(f"routed, each request on the model that served it:   ${s:,.2f}")
    print(f"routed, with the cache's answers free:               ${c:,.2f}")
    print(f"\nsaving: {100 * (b - c) / b:.1f}%")
    print(f"  due to selection: {100 * (b - s) / b:.1f}% of the baseline")
    print(f"  due to the cache: {100 * (s - c) / b:.1f}% of the baseline")
    found = violations(prices, answers)
    print(f"capability violations: {len(found)}")
    for v in found[:10]:
        print(f"  {v}")

    print(f"\n{'model':<20}{'requests':>10}{'hits':>7}{'cost':>12}{'router says':>13}")
    said = {g["key"]: Decimal(g["cost"]) for g in report.get("groups", [])}
    per_model: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        per_model[a.model].append(a)
    for model, group in sorted(per_model.items(), key=lambda kv: -len(kv[1])):
        cost = sum((price(prices, model, a) for a in group if not a.cached), Decimal(0))
        router_cost = said.get(model, Decimal(0))
        print(
            f"{model:<20}{len(group):>10}{sum(a.cached for a in group):>7}"
            f"{'$' + format(cost, ',.2f'):>12}{'$' + format(router_cost, ',.2f'):>13}"
        )
    for g in report.get("groups", []):
        group = per_model.get(g["key"], [])
        served_here = [a for a in group if not a.cached]
        mine = (
            sum(a.prompt_tokens for a in served_here),
            sum(a.completion_tokens for a in served_here),
        )
        if (g["promptTokens"], g["completionTokens"]) != mine:
            print(
                f"  {g['key']}: the router counted {g['promptTokens']} + "
                f"{g['completionTokens']} tokens, the answers said {mine[0]} + {mine[1]}"
            )
    router_total = Decimal(report["totals"]["cost"])
    # Calls that did not answer their request are paid for too: the answers cannot
    # show them; the router's records do.
    expected = c + paid.hedged_cost
    agree = abs(router_total - expected) <= Decimal("0.01")
    print(f"\n{paid.line()}")
    print(
        f"the router's usage report: ${router_total:,.4f} "
        f"({'agrees' if agree else 'DISAGREES'} with the answers' ${c:,.4f} and the "
        f"hedged ${paid.hedged_cost:,.4f})"
    )
    plot(prices, answers, baseline, plot_path)
    if found or not agree:
        raise SystemExit("capability violations, or the router's accounting disagrees")


if __name__ == "__main__":
    raise SystemExit(main())
