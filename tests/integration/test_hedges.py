"""Every call a provider bills is recorded and budgeted: a hedge's losing call is a usage
record of its own, budgets hold its cost before it is sent, and a request is not hedged
for asking for a long answer. On SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai

from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table
from tests.support.usage_rows import wait_rows

AUTH = {"Authorization": f"Bearer {KEY}"}
WARM_UP = 8
Start = Callable[..., RouterServer]


def pair(fakes: Fakes, **routing: Any) -> dict[str, Any]:
    """A primary and a backup serving one model; the primary's calls are hedged once
    they outlive their deadline."""
    budgets = routing.pop("budgets", None)
    doc = table(
        [
            provider(
                "primary", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY", priority=1
            ),
            provider("backup", "vllm", fakes.vllm.url, priority=2),
        ],
        [
            model(
                "chat",
                "primary",
                "gpt-4o-mini",
                inputPricePer1MTokens="1000",
                outputPricePer1MTokens="2000",
            ),
            model(
                "chat",
                "backup",
                "meta-llama/Llama-3.1-8B-Instruct",
                inputPricePer1MTokens="1000",
                outputPricePer1MTokens="2000",
            ),
        ],
        routing={
            "breaker": {"failureThreshold": 100, "cooldownSeconds": 60},
            "stall": {"minSamples": WARM_UP, "floorMs": 200},
            **routing,
        },
    )
    if budgets:
        doc["budgets"] = budgets
    return doc


def client(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, timeout=10.0, max_retries=0)


def ask(c: openai.OpenAI, stream: bool = False, max_tokens: int = 20) -> str:
    """One request; the provider that served it."""
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        with c.chat.completions.with_streaming_response.create(
            model="chat",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            max_tokens=max_tokens,
        ) as raw:
            assert "".join(
                ch.choices[0].delta.content or ""
                for ch in raw.parse()
                if ch.choices and ch.choices[0].delta
            )
            return raw.headers["x-switchyard-provider"]
    r = c.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
    )
    assert r.parse().choices[0].message.content
    return r.headers["x-switchyard-provider"]


def usage(gw: RouterServer, **params: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/api/v1/llm/usage", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_hedge_that_loses_is_a_usage_record_and_in_the_report(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(pair(fakes))
    c = client(gw)
    for _ in range(WARM_UP):
        assert ask(c) == "primary"
    fakes.openai.push(Fault.stall(0.8))  # past its deadline: the backup is asked and wins
    assert ask(c) == "backup"
    rows = wait_rows(database_url, gw.state_dir, WARM_UP + 2, timeout=15)
    assert len(rows) == WARM_UP + 2
    hedged = [r for r in rows if r["status"] == "hedged"]
    assert len(hedged) == 1
    [h] = hedged
    # The primary answered in the end, and billed: its own usage, at its price.
    assert h["provider"] == "primary" and h["error_class"] is None
    assert h["prompt_tokens"] > 0 and h["completion_tokens"] > 0
    assert (
        h["total_cost"]
        == Decimal(h["prompt_tokens"] * 1000 + h["completion_tokens"] * 2000) / 10**6
    )
    # The report shows it apart, and counts its cost and tokens with everyone's.
    report = usage(gw, groupBy="provider")
    groups = {g["key"]: g for g in report["groups"]}
    assert groups["primary"]["requests"] == WARM_UP and groups["primary"]["hedgedCalls"] == 1
    assert groups["primary"]["errors"] == 0
    assert groups["backup"]["requests"] == 1 and groups["backup"]["hedgedCalls"] == 0
    assert report["totals"]["hedgedCalls"] == 1
    assert Decimal(report["totals"]["cost"]) == sum((r["total_cost"] for r in rows), Decimal(0))
    assert report["totals"]["promptTokens"] == sum(r["prompt_tokens"] for r in rows)
    metrics = httpx.get(f"{gw.admin}/metrics").text
    assert (
        'switchyard_hedged_calls_total{organization="default",outcome="hedged",'
        'provider="primary"} 1.0' in metrics
    )


def test_a_stream_hedge_that_loses_is_cancelled_and_recorded_with_an_estimate(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(pair(fakes))
    c = client(gw)
    for _ in range(WARM_UP):
        assert ask(c, stream=True) == "primary"
    fakes.openai.push(Fault.stall(0.8))
    assert ask(c, stream=True) == "backup"
    rows = wait_rows(database_url, gw.state_dir, WARM_UP + 2, timeout=15)
    [lost] = [r for r in rows if r["status"] == "cancelled"]
    assert lost["provider"] == "primary" and lost["stream"]
    assert lost["error_class"] == "usage_estimated"
    assert lost["prompt_tokens"] > 0 and lost["total_cost"] > 0


def test_a_request_whose_budget_cannot_cover_a_second_call_is_not_hedged(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    # The warm-up spends 0.096 USD (each request 6 prompt and 3 completion tokens at 1,000
    # and 2,000 USD a million). A call may then cost up to 0.057 USD (about 17 prompt
    # tokens and 20 output tokens): the 0.104 left of the day's budget holds one such
    # estimate, never two.
    gw = stored_router(pair(fakes, budgets=[{"organization": "default", "dailyUsd": "0.2"}]))
    c = client(gw)
    for _ in range(WARM_UP):
        assert ask(c) == "primary"
    wait_rows(database_url, gw.state_dir, WARM_UP)
    fakes.openai.push(Fault.stall(0.8))
    before = fakes.vllm.completions
    started = time.monotonic()
    assert ask(c) == "primary"  # waited for: no hedge was affordable
    assert time.monotonic() - started >= 0.8
    assert fakes.vllm.completions == before
    metrics = httpx.get(f"{gw.admin}/metrics").text
    assert 'switchyard_hedges_refused_total{organization="default"} 1.0' in metrics


def test_a_long_answer_is_not_hedged_for_being_long(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    """A plain call's deadline scales with the output it may produce: the same delay
    hedges a short request and not a long one."""
    gw = stored_router(pair(fakes))
    c = client(gw)
    for _ in range(WARM_UP):
        assert ask(c) == "primary"
    fakes.openai.push(Fault.stall(0.8))
    assert ask(c, max_tokens=20) == "backup"  # a short request: it has stalled
    before = fakes.vllm.completions
    fakes.openai.push(Fault.stall(0.8))
    assert ask(c, max_tokens=4000) == "primary"  # a long one may take that long
    assert fakes.vllm.completions == before
