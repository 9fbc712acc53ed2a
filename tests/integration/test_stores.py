"""The stores on their own: concurrent migrations and cache upkeep."""

from __future__ import annotations

import asyncio
import sqlite3
from array import array
from datetime import UTC, date, datetime, time, timedelta
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
    for store in _both(postgres, tmp_path / "db.sqlite"):
        assert asyncio.run(_purge(store)) == (1, True, True), store.kind


def _both(postgres: PostgresServer, sqlite_path: Path) -> tuple[Store, Store]:
    """A store on a fresh PostgreSQL database and one on a new SQLite file."""
    return make_store(fresh_database(postgres), "unused"), make_store(None, sqlite_path)


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
    for store in _both(postgres, tmp_path / "usage.sqlite"):
        assert asyncio.run(_retain(store)) == (14, 1, 8, 0), store.kind


async def _partial(store: Store) -> None:
    await store.open()
    now = datetime.now(UTC).replace(hour=12)
    records = []
    for i in range(300):
        r = _record("o", now - timedelta(minutes=i))
        records.append(
            r._replace(
                api_key=f"k{i % 3}",
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
    for store in _both(postgres, tmp_path / "partial.sqlite"):
        asyncio.run(_partial(store))


# -- a store at schema version 4, from before rollups were kept per API key ----------
OLD_DAY = datetime.now(UTC).date() - timedelta(days=1)
OLD_AT = datetime.combine(OLD_DAY, time(12), UTC)
#: An llm_requests row as version 4 stored it, money in dollars (the tail: latency,
#: time to first token, status, HTTP status, error class, cache hit, stream).
OLD_ROW = ("o", "old-key", "openai", "p", "m", None, 10, 5, 15)
OLD_COST = (Decimal("0.001"), Decimal("0.002"), Decimal("0.003"), Decimal(0))
OLD_TAIL = (20.0, None, "ok", 200, None)


def _v4_sqlite(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "CREATE TABLE switchyard_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for m in MIGRATIONS[:4]:
        db.executescript(m.sqlite)
        db.execute("INSERT INTO switchyard_migrations VALUES (?, ?, 0)", (m.version, m.name))
    nanos = tuple(int(c * 10**9) for c in OLD_COST)
    db.execute(
        "INSERT INTO llm_requests VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("old-id", *OLD_ROW, *nanos, *OLD_TAIL, 0, 0, OLD_AT.timestamp(), OLD_AT.timestamp()),
    )
    hist = [0] * 256
    hist[100] = 1
    db.execute(
        "INSERT INTO llm_usage_daily VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("o", OLD_DAY.isoformat(), "p", "m", "", 1, 0, 0, 10, 5, nanos[2], 0,
         array("q", hist).tobytes(), 0),
    )  # fmt: skip
    db.close()


def _v4_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE switchyard_migrations (version integer PRIMARY KEY, name text "
            "NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in MIGRATIONS[:4]:
            db.execute(m.postgres.encode())
            db.execute(
                "INSERT INTO switchyard_migrations (version, name) VALUES (%s, %s)",
                (m.version, m.name),
            )
        db.execute(
            "INSERT INTO llm_requests VALUES (gen_random_uuid(), %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false, false, %s, %s)",
            (*OLD_ROW, *OLD_COST, *OLD_TAIL, OLD_AT, OLD_AT),
        )
        hist = [0] * 256
        hist[100] = 1
        db.execute(
            "INSERT INTO llm_usage_daily VALUES (%s, %s, 'p', 'm', '', 1, 0, 0, 10, 5, %s, 0, "
            "%s, 0)",
            ("o", OLD_DAY, OLD_COST[2], hist),
        )


async def _migrate_from_4(store: Store) -> None:
    await store.open()
    day, next_day = OLD_DAY, OLD_DAY + timedelta(days=1)
    [old] = await store.usage_rollups("o", day, next_day)
    assert (old.api_key, old.requests, old.cost, old.hist[100]) == ("", 1, Decimal("0.003"), 1)
    # The day rolled up before keys were counted apart is the key '' (unknown).
    [unknown] = await store.usage_key_rollups("o", day, next_day)
    assert (unknown.api_key, unknown.requests, unknown.cost) == ("", 1, Decimal("0.003"))
    [record] = await store.usage_records("o", OLD_AT, OLD_AT + timedelta(seconds=1))
    assert (record.api_key, record.total_cost, record.latency_ms, record.trace_id) == (
        "old-key",
        Decimal("0.003"),
        20.0,
        None,
    )
    # New usage of the same day, provider, model and task: one rollup as before, and a
    # rollup per key beside it.
    later = OLD_AT + timedelta(hours=1)
    await store.write_usage(
        [
            _record("o", later)._replace(api_key="k1", provider="p", model="m"),
            _record("o", later)._replace(api_key="k2", provider="p", model="m"),
            _record("o", later)._replace(api_key="k2", provider="p", model="m"),
        ]
    )
    [rollup] = await store.usage_rollups("o", day, next_day)
    assert (rollup.api_key, rollup.requests, rollup.cost) == ("", 4, Decimal("0.012"))
    by_key = {r.api_key: r for r in await store.usage_key_rollups("o", day, next_day)}
    assert {k: r.requests for k, r in by_key.items()} == {"": 1, "k1": 1, "k2": 2}
    assert by_key[""].cost == Decimal("0.003")  # untouched by the new records
    whole_day = (OLD_AT.replace(hour=0), OLD_AT.replace(hour=0) + timedelta(days=1))
    groups, total = await store.usage_report("o", *whole_day, "apiKey")
    assert [(g.key, g.requests) for g in groups] == [("(none)", 1), ("k1", 1), ("k2", 2)]
    assert total.requests == 4 and total.cost == Decimal("0.012")
    _, by_model = await store.usage_report("o", *whole_day, "model")
    assert (by_model.requests, by_model.cost) == (total.requests, total.cost)
    # A partial day is read from the records, which always knew their key.
    groups, _ = await store.usage_report("o", OLD_AT, later + timedelta(seconds=1), "apiKey")
    assert [(g.key, g.requests) for g in groups] == [("k1", 1), ("k2", 2), ("old-key", 1)]
    await store.close()


def test_migration_5_keeps_what_version_4_stored(postgres: PostgresServer, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    _v4_postgres(url)
    _v4_sqlite(tmp_path / "v4.sqlite")
    for store in (make_store(url, "unused"), make_store(None, tmp_path / "v4.sqlite")):
        asyncio.run(_migrate_from_4(store))


async def _by_key(store: Store) -> None:
    await store.open()
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    await store.write_usage(
        [
            _record(org, noon - timedelta(days=2, minutes=i))._replace(api_key=f"k{i % 2}")
            for i in range(5)
            for org in ("o", "other")
        ]
    )
    day = (noon - timedelta(days=2)).date()
    keyed = await store.usage_key_rollups("o", day, day + timedelta(days=1))
    assert sorted((r.api_key, r.requests, r.cost) for r in keyed) == [
        ("k0", 3, Decimal("0.009")),
        ("k1", 2, Decimal("0.006")),
    ]
    assert {r.organization for r in keyed} == {"o"}
    # The rollups per provider, model and task do not multiply with the keys.
    [rollup] = await store.usage_rollups("o", day, day + timedelta(days=1))
    assert (rollup.api_key, rollup.requests) == ("", 5)
    start = datetime.combine(day, time.min, UTC)
    by_range = await store.usage_range("o", start, start + timedelta(days=1), by_key=True)
    assert sorted(r.key for r in by_range) == sorted(r.key for r in keyed)
    await store.close()


def test_spend_is_kept_per_api_key_apart_from_the_rollups(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    for store in _both(postgres, tmp_path / "keys.sqlite"):
        asyncio.run(_by_key(store))


def test_spend_counters_are_their_records_summed_by_day_and_month(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Records of two organizations and three keys over the end of a month, written in
    two batches, some free: each counter (organization and key, day and month) holds the
    sum of its records' cost, on both stores."""
    for store in _both(postgres, tmp_path / "spend.sqlite"):
        asyncio.run(_spend_sums(store))


async def _spend_sums(store: Store) -> None:
    await store.open()
    start = datetime(2026, 1, 30, 22, tzinfo=UTC)
    records = [
        _record(org, start + timedelta(hours=7 * i))._replace(
            id=f"00000000-0000-4000-8000-{i:06d}{org == 'b':06d}",
            api_key=f"k{i % 3}",
            input_cost=Decimal(i % 4) / 1000,  # every fourth is free
            output_cost=Decimal(0),
        )
        for i in range(20)
        for org in "ab"
    ]
    await store.write_usage(records[:17])
    await store.write_usage(records[17:])
    expected: dict[tuple[str, str, str, date], Decimal] = {}
    for r in records:
        day = r.requested_at.date()
        for scope, subject in (
            ("organization", r.organization),
            ("apiKey", f"{r.organization}/{r.api_key}"),
        ):
            for period, begins in (("day", day), ("month", day.replace(day=1))):
                key = (scope, subject, period, begins)
                expected[key] = expected.get(key, Decimal(0)) + r.total_cost
    found: dict[tuple[str, str, str, date], Decimal] = {}
    subjects = sorted({(k[0], k[1]) for k in expected})
    days = sorted({k[3] for k in expected if k[2] == "day"})
    for day in days:
        spend = await store.spend(subjects, day, day.replace(day=1))
        found.update(spend.totals)
    await store.close()
    assert {k: v for k, v in found.items() if v} == {k: v for k, v in expected.items() if v}
    assert any(k[3].month == 2 for k in found) and any(k[3].month == 1 for k in found)


async def _traces(store: Store) -> None:
    await store.open()
    now = datetime.now(UTC)
    traced = _record("o", now)._replace(trace_id="0af7651916cd43dd8448eb211c80319c")
    untraced = _record("o", now - timedelta(seconds=1))
    await store.write_usage([traced, untraced])
    records = await store.usage_records("o", now - timedelta(minutes=1), now + timedelta(seconds=1))
    assert {r.id: r.trace_id for r in records} == {
        traced.id: "0af7651916cd43dd8448eb211c80319c",
        untraced.id: None,
    }
    await store.close()


def test_usage_records_keep_their_trace_id(postgres: PostgresServer, tmp_path: Path) -> None:
    for store in _both(postgres, tmp_path / "traces.sqlite"):
        asyncio.run(_traces(store))


async def _recent(store: Store) -> None:
    await store.open()
    now = datetime.now(UTC)
    since = now - timedelta(hours=1)

    def at(minutes: float, **fields: object) -> UsageRecord:
        return _record("o", now - timedelta(minutes=minutes))._replace(**fields)

    slow = [at(10 + i, latency_ms=float(100 * (i + 1))) for i in range(6)]
    failed = [at(5 + i, status="error", http_status=503, latency_ms=1.0) for i in range(4)]
    ignored = [
        at(1, status="hedged", latency_ms=99_000.0),  # did not answer a request
        at(2, status="cancelled", latency_ms=98_000.0),
        at(3, latency_ms=None),
        at(61, latency_ms=97_000.0, status="error"),  # before ``since``
        _record("other", now)._replace(latency_ms=96_000.0, status="error"),
    ]
    await store.write_usage(slow + failed + ignored)

    slowest = await store.recent_requests("o", since, "slowest", 3)
    assert [r.id for r in slowest] == [r.id for r in slow[::-1][:3]]
    assert [r.latency_ms for r in slowest] == [600.0, 500.0, 400.0]
    everything = await store.recent_requests("o", since, "slowest", 100)
    assert {r.id for r in everything} == {r.id for r in slow + failed}
    newest_failed = await store.recent_requests("o", since, "failed", 3)
    assert [r.id for r in newest_failed] == [r.id for r in failed[:3]]
    assert all(r.status == "error" and r.http_status == 503 for r in newest_failed)
    assert len(await store.recent_requests("o", since, "failed", 100)) == 4
    # Another organization sees only its own.
    [theirs] = await store.recent_requests("other", since, "failed", 10)
    assert theirs.id == ignored[-1].id
    assert await store.recent_requests("nobody", since, "slowest", 10) == []
    # The limit is taken within 1 and 100.
    assert len(await store.recent_requests("o", since, "slowest", 0)) == 1
    await store.write_usage([at(20, latency_ms=1.0) for _ in range(120)])
    assert len(await store.recent_requests("o", since, "slowest", 10_000)) == 100
    await store.close()


def test_recent_slowest_and_failed_requests(postgres: PostgresServer, tmp_path: Path) -> None:
    for store in _both(postgres, tmp_path / "recent.sqlite"):
        asyncio.run(_recent(store))
