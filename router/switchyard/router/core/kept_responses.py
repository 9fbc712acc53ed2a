"""Responses API answers kept in the usage store, scoped to their organization.

``store`` (true unless the request says false) keeps an answer, with what the model was
given, for ``routing.storedResponseDays``; ``GET /v1/responses/{id}`` reads it back and
``previous_response_id`` continues from it. The write is awaited before the client has
the answer, so a follow-up on any replica finds it. Expired answers are purged hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from switchyard.router.errors import NotFound, StorageUnavailable
from switchyard.router.storage.base import Store, StoredResponse, StoreUnavailable
from switchyard.router.storage.records import utcnow

log = logging.getLogger("switchyard.router.responses")


class KeptResponses:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._purger: asyncio.Task[None] | None = None

    async def keep(
        self,
        organization: str,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        days: int,
    ) -> bool:
        """Keep ``response``; False (and a log line) when the store cannot take it now.

        The answer was made and paid for, so a store outage does not turn it into an
        error: it is served, and a later lookup of its id is a 404.
        """
        now = utcnow()
        kept = StoredResponse(
            response["id"], organization, response, input_items, now, now + timedelta(days=days)
        )
        try:
            await self.store.response_put(kept)
        except StoreUnavailable as exc:
            log.error("response %s was served but not kept: %s", kept.id, exc)
            return False
        return True

    async def find(self, organization: str, id: str, *, field: str | None = None) -> StoredResponse:
        """The kept answer, or a 404 naming ``field`` (the request's, when it has one)."""
        try:
            kept = await self.store.response_get(organization, id, utcnow())
        except StoreUnavailable as exc:
            raise StorageUnavailable(f"stored responses cannot be read now: {exc}") from exc
        if kept is None:
            raise NotFound(f"No response with id '{id}' found.", field=field)
        return kept

    async def forget(self, organization: str, id: str) -> None:
        try:
            found = await self.store.response_delete(organization, id)
        except StoreUnavailable as exc:
            raise StorageUnavailable(f"stored responses cannot be changed now: {exc}") from exc
        if not found:
            raise NotFound(f"No response with id '{id}' found.")

    def start(self, every: float = 3600.0) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge(every))

    async def _purge(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                purged = await self.store.response_purge(utcnow())
                if purged:
                    log.info("purged %d expired stored responses", purged)
            except Exception as exc:
                log.warning("purging stored responses failed: %s", exc)

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
