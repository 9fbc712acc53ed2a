"""The stores on their own: concurrent migrations and cache upkeep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from switchyard.router.core.retention import UsageRetention
from switchyard.router.storage.base import CacheEntry, Store
from switchyard.router.storage.factory import make_store
from switchyard.router.storage.migrations import MIGRATIONS
from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.rollup import Rollup, rollups_of
from tests.integration.conftest import fresh_database
from tests.support.postgres import PostgresServer
from tests.support.usage_rows import usage_record


def test_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = fresh_database(postgres)

    async def start_all() -> None:
        stores = [make_store(url, "unused") for _ in range(6)]
        await asyncio.gather(*(s.open() for s in stores))
        await asyncio.gather(*(s.close() for s in stores))

    asyncio.run(start_all())
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM switchyard_migrations").fetchall()
    assert rows == [(m.version,) for m in MIGRATIONS]


async def _purge(store: Store) -> tuple[int, bool, bool]:
    await store.open()
    now = datetime.now(UTC)
    for key, expires in (("old", now - timedelta(seconds=1)), ("new", now + timedelta(days=7))):
        await store.cache_put(
            CacheEntry(key, "org", {"x": 1}, Decimal("0.5"), now - timedelta(days=8), expires)
        )
    await store.cache_hits({"new": (3, now)})
    purged = await store.cache_purge(now)
    old = await store.cache_get("old", now - timedelta(days=1))
    new = await store.cache_get("new", now)
    await store.close()
    assert new is None or new.hit_count == 3
    return purged, old is None, new is not None


def test_expired_cache_entries_are_purged(postgres: PostgresServer, tmp_path: Path) -> None:
    for store in (
        make_store(fresh_database(postgres), "unused"),
        make_store(None, tmp_path / "db.sqlite"),
    ):
        assert asyncio.run(_purge(store)) == (1, True, True), store.kind


def _record(org: str, at: datetime) -> UsageRecord:
    return usage_record(
        organization=org,
        api="openai",
        prompt_tokens=10,
        completion_tokens=5,
        input_cost=Decimal("0.001"),
        output_cost=Decimal("0.002"),
        latency_ms=20.0,
        requested_at=at,
    )


async def _retain(store: Store) -> tuple[int, int, int, int]:
    await store.open()
    now = datetime.now(UTC)
    old = [_record(org, now - timedelta(days=100, hours=i)) for i in range(7) for org in "ab"]
    new = [_record(org, now - timedelta(days=1)) for org in "ab"]
    await store.write_usage(old + new)
    purged = await store.usage_purge(now - timedelta(days=90), batch=3)  # 3 + 3 + 1 per org
    left = await store.usage_records("a", now - timedelta(days=400), now)
    # The report still counts the purged days: it reads the daily rollups.
    _, total = await store.usage_report(
        "a",
        datetime.combine((now - timedelta(days=200)).date(), datetime.min.time(), UTC),
        datetime.combine(now.date(), datetime.min.time(), UTC),
        "day",
    )
    again = await UsageRetention(store, days=90).purge()
    await store.close()
    return purged, len(left), total.requests, again


def test_old_usage_records_are_deleted_and_reports_keep_their_days(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    for store in (
        make_store(fresh_database(postgres), "unused"),
        make_store(None, tmp_path / "usage.sqlite"),
    ):
        assert asyncio.run(_retain(store)) == (14, 1, 8, 0), store.kind


async def _partial(store: Store) -> None:
    await store.open()
    now = datetime.now(UTC).replace(hour=12)
    records = []
    for i in range(300):
        r = _record("o", now - timedelta(minutes=i))
        records.append(
            r._replace(
                latency_ms=None if i % 17 == 0 else [0.05, 3.0, 250.0, 9000.0, 700_000.0][i % 5],
                status="error" if i % 7 == 0 else "ok",
                cache_hit=i % 3 == 0,
                task_type=None if i % 2 else "chat",
                model=f"m{i % 4}",
                input_cost=Decimal(i) / 1000,
            )
        )
    await store.write_usage(records)
    lo, hi = now - timedelta(hours=6), now
    by_sql = await store.usage_partial("o", lo, hi)
    by_python = rollups_of(await store.usage_records("o", lo, hi))
    await store.close()

    def as_dict(rollups: list[Rollup]) -> dict[object, tuple[object, ...]]:
        return {
            r.key: (
                r.requests,
                r.errors,
                r.cache_hits,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost,
                r.saved_cost,
                tuple(r.hist),
            )
            for r in rollups
        }

    assert as_dict(by_sql) == as_dict(by_python)
    assert sum(r.requests for r in by_sql) == 300 - 1  # the 6 h range ends before the last


def test_a_partial_day_is_summed_by_the_database_as_rollups_of_its_records(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    for store in (
        make_store(fresh_database(postgres), "unused"),
        make_store(None, tmp_path / "partial.sqlite"),
    ):
        asyncio.run(_partial(store))
