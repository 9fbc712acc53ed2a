"""Pick the store from the configuration and keep trying to open it in the background."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from switchyard.router.storage.base import Store

log = logging.getLogger("switchyard.router.storage")


def make_store(database_url: str | None, sqlite_path: str | Path) -> Store:
    """PostgreSQL when a URL is given; otherwise the embedded SQLite file."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the database URL must start with postgresql://")
        from switchyard.router.storage.postgres import PostgresStore

        return PostgresStore(database_url)
    from switchyard.router.storage.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path)


async def open_until_ready(store: Store, first_wait: float = 10.0) -> asyncio.Task[None] | None:
    """Open now if the database answers; else keep trying in the background.

    The router serves either way: usage records go to the spool until the
    database is there, so an absent database delays nothing.
    """
    try:
        await asyncio.wait_for(store.open(), first_wait)
        return None
    except Exception as exc:
        log.error(
            "the %s store is not available yet (%s); retrying in the background", store.kind, exc
        )

    async def retry() -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await store.open()
                log.info("the %s store is available", store.kind)
                return
            except Exception as exc:
                log.warning("still cannot open the %s store: %s", store.kind, exc)
                delay = min(delay * 2, 30.0)

    return asyncio.get_running_loop().create_task(retry())
