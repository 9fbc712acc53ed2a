"""How long usage records are kept: ``--usage-record-days``.

Records are the per-request detail; what reports and budgets read survives them (the
daily rollups and spend counters, written in the same transaction as each record). An
hourly pass deletes records older than the retention, in small batches, so a store
holds a bounded number of rows however long it runs. 0 keeps every record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from switchyard.router.storage.base import Store
from switchyard.router.storage.records import utcnow

log = logging.getLogger("switchyard.router")


class UsageRetention:
    def __init__(self, store: Store, days: int, every: float = 3600.0) -> None:
        self.store = store
        self.days = days
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.days > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def purge(self) -> int:
        """One pass: the records older than the retention, gone."""
        purged = await self.store.usage_purge(utcnow() - timedelta(days=self.days))
        if purged:
            log.info("deleted %d usage records older than %d days", purged, self.days)
        return purged

    async def _run(self) -> None:
        await asyncio.sleep(60)  # not in the way of a start
        while True:
            try:
                await self.purge()
            except Exception as exc:
                log.warning("deleting old usage records failed (tried again later): %s", exc)
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
