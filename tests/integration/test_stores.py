"""The stores on their own: concurrent migrations and cache upkeep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from switchyard.router.storage.base import CacheEntry, Store
from switchyard.router.storage.factory import make_store
from tests.integration.conftest import fresh_database
from tests.support.postgres import PostgresServer


def test_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = fresh_database(postgres)

    async def start_all() -> None:
        stores = [make_store(url, "unused") for _ in range(6)]
        await asyncio.gather(*(s.open() for s in stores))
        await asyncio.gather(*(s.close() for s in stores))

    asyncio.run(start_all())
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM switchyard_migrations").fetchall()
    assert rows == [(1,), (2,)]


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
