"""Spending budgets held in Redis for two replicas, step by step: what one holds the
other sees, a committed cost is counted once whether or not the other has read the
database since, and a dead replica's estimate is let go."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from switchyard.router.contract import Budget
from switchyard.router.core.budgets import BudgetGuard, OverBudget
from switchyard.router.core.caller import Caller
from switchyard.router.metrics import Metrics
from switchyard.router.storage.factory import make_store
from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.shared_state import SharedState
from tests.support.redis import RedisServer
from tests.support.usage_rows import usage_record

CALLER = Caller("test", "default", frozenset({"completions"}))
USD = Decimal


def record(cost: str) -> UsageRecord:
    return usage_record(api_key="test", output_cost=USD(cost))


Commit = Callable[[UsageRecord], Awaitable[None]]
Scenario = Callable[[BudgetGuard, BudgetGuard, Commit], Awaitable[None]]


def run(
    redis: RedisServer,
    tmp_path: Path,
    scenario: Scenario,
    hold_seconds: float = 600,
    limit: str = "1.00",
) -> None:
    async def main() -> None:
        store = make_store(None, tmp_path / "usage.db")
        await store.open()
        shared = [SharedState(redis.url, Metrics(), lambda news: None) for _ in range(2)]
        guards = []
        for s in shared:
            await s.start()
            assert s.connected
            g = BudgetGuard(store, refresh_interval=3600, shared=s, hold_seconds=hold_seconds)
            g.configure([Budget(organization="default", daily_usd=limit)])
            await g.refresh()
            guards.append(g)

        async def commit(r: UsageRecord) -> None:
            await store.write_usage([r])
            guards[0].stored([r], time.monotonic())
            await asyncio.sleep(0.1)  # the commit's script has run

        try:
            await scenario(guards[0], guards[1], commit)
        finally:
            for s in shared:
                await s.close()
            await store.close()

    asyncio.run(main())


async def refused(guard: BudgetGuard, estimate: str) -> Decimal:
    with pytest.raises(OverBudget) as refusal:
        await guard.reserve(CALLER, USD(estimate))
    return USD(refusal.value.budget["spentUsd"])


def test_what_one_replica_holds_the_other_sees(redis: RedisServer, tmp_path: Path) -> None:
    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        held = await a.reserve(CALLER, USD("0.60"))
        assert await refused(b, "0.50") == USD("0.60")
        mine = await b.reserve(CALLER, USD("0.40"))  # exactly what is left
        assert await refused(a, "0.000001") == USD("1.00")
        b.settle(mine, None)  # failed: nothing spent, nothing held
        await asyncio.sleep(0.05)
        assert await refused(b, "0.41") == USD("0.60")
        # Answered for less than its estimate, close to the limit: the cost counts at once.
        r = record("0.30")
        a.settle(held, r)
        await asyncio.sleep(0.05)
        assert await refused(b, "0.71") == USD("0.30")
        await commit(r)
        assert await refused(b, "0.71") == USD("0.30")
        await b.reserve(CALLER, USD("0.70"))

    run(redis, tmp_path, scenario)


def test_far_from_its_limit_an_estimate_is_held_until_committed(
    redis: RedisServer, tmp_path: Path
) -> None:
    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        r = record("0.30")
        a.settle(await a.reserve(CALLER, USD("0.60")), r)
        await asyncio.sleep(0.05)
        assert await refused(b, "999.41") == USD("0.60")  # one script less per request
        await commit(r)
        assert await refused(b, "999.71") == USD("0.30")

    run(redis, tmp_path, scenario, limit="1000")


def test_a_cost_above_its_estimate_counts_at_once(redis: RedisServer, tmp_path: Path) -> None:
    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        a.settle(await a.reserve(CALLER, USD("0.10")), record("0.25"))
        await asyncio.sleep(0.05)
        assert await refused(b, "0.76") == USD("0.25")

    run(redis, tmp_path, scenario)


def test_a_committed_cost_is_counted_once(redis: RedisServer, tmp_path: Path) -> None:
    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        r = record("0.30")
        a.settle(await a.reserve(CALLER, USD("0.50")), r)
        await commit(r)
        # b read the database before the commit: the cost is counted from Redis.
        assert await refused(b, "0.71") == USD("0.30")
        await asyncio.sleep(0.1)
        await b.refresh()
        # b's new read has it: it is not counted again.
        assert await refused(b, "0.71") == USD("0.30")
        await b.reserve(CALLER, USD("0.70"))

    run(redis, tmp_path, scenario)


def test_a_dead_replicas_estimate_is_let_go(redis: RedisServer, tmp_path: Path) -> None:
    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        await a.reserve(CALLER, USD("0.50"))  # a dies: never settled
        assert await refused(b, "0.60") == USD("0.50")
        await asyncio.sleep(1.2)
        await b.reserve(CALLER, USD("0.60"))

    run(redis, tmp_path, scenario, hold_seconds=1.0)


def test_a_replayed_hold_or_commit_counts_once(redis: RedisServer, tmp_path: Path) -> None:
    """redis-py runs a pipeline again when its connection drops after sending it."""

    async def scenario(a: BudgetGuard, b: BudgetGuard, commit: Commit) -> None:
        a._ids = itertools.repeat(7)  # two holds of one id: the second is the replay
        first = await a.reserve(CALLER, USD("0.40"))
        await a.reserve(CALLER, USD("0.40"))
        assert await refused(b, "0.61") == USD("0.40")
        r = record("0.40")
        a.settle(first, r)
        await commit(r)
        assert a.shared is not None
        a.shared.send("commit", first.shared_keys, [first.shared_id, 400_000_000])
        await asyncio.sleep(0.05)
        assert await refused(b, "0.61") == USD("0.40")

    run(redis, tmp_path, scenario)
