"""The one interface both stores implement."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.rollup import (
    GROUP_BY,
    GroupBy,
    Rollup,
    UsageRow,
    report,
    rollups_of,
    split_days,
)

__all__ = ["GROUP_BY", "GroupBy", "Rollup", "UsageRow"]


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the write; try again later."""


@dataclass(slots=True)
class CacheEntry:
    key: str
    organization: str
    response: dict[str, Any]  # the neutral result, serialized
    cost: Decimal  # what the answer cost when it was made
    created_at: datetime
    expires_at: datetime
    hit_count: int = 0


@dataclass(slots=True)
class StoredResponse:
    """A Responses API answer kept for ``GET /v1/responses/{id}`` and for requests that
    continue it (``previous_response_id``)."""

    id: str
    organization: str
    response: dict[str, Any]  # the response object as the client got it
    input_items: list[dict[str, Any]]  # what the model was given, earlier turns included
    created_at: datetime
    expires_at: datetime


@dataclass(slots=True)
class SpendKey:
    scope: Literal["organization", "apiKey"]
    subject: str  # organization, or organization/key name
    period: Literal["day", "month"]
    start: date


@dataclass(slots=True)
class Spend:
    totals: dict[tuple[str, str, str, date], Decimal] = field(default_factory=dict)


class Store(abc.ABC):
    kind: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations (safe when replicas start together)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def write_usage(self, records: Sequence[UsageRecord]) -> int:
        """Store records not stored before (by id) and add their cost to the spend
        counters, in one transaction. Returns how many were new."""

    async def usage_report(
        self, organization: str, start: datetime, end: datetime, group_by: GroupBy
    ) -> tuple[list[UsageRow], UsageRow]:
        """Whole days from the daily rollups; partial days at the edges from the records."""
        first, last, edges = split_days(start, end)
        rollups = await self.usage_rollups(organization, first, last) if first < last else []
        # A range that ends now (the caller's "now", a moment ago) takes today so far from
        # today's rollup, which holds every record of it already.
        recent = datetime.now(UTC) - timedelta(seconds=60)
        for lo, hi in edges:
            if hi >= recent and lo.time() == time.min:
                day = lo.date()
                rollups += await self.usage_rollups(organization, day, day + timedelta(days=1))
            else:
                rollups += await self.usage_partial(organization, lo, hi)
        return report(rollups, group_by)

    async def usage_partial(
        self, organization: str, start: datetime, end: datetime
    ) -> list[Rollup]:
        """Rollups of the records requested in [start, end), a partial day: summed by
        the database where it can (a day of a busy organization is many records)."""
        records = await self.usage_records(organization, start, end)
        return await asyncio.to_thread(rollups_of, records)

    @abc.abstractmethod
    async def usage_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        """Daily rollups for days in [first, last)."""

    @abc.abstractmethod
    async def usage_records(
        self, organization: str, start: datetime, end: datetime
    ) -> list[UsageRecord]:
        """Records requested in [start, end)."""

    @abc.abstractmethod
    async def usage_purge(self, before: datetime, batch: int = 5000) -> int:
        """Delete the records requested before ``before``, ``batch`` at a time (each its
        own short transaction), organization by organization along the index every query
        uses. The daily rollups and spend counters stay: reports keep every whole day.
        Returns how many went."""

    @abc.abstractmethod
    async def cache_get(self, key: str, now: datetime) -> CacheEntry | None: ...

    @abc.abstractmethod
    async def cache_put(self, entry: CacheEntry) -> None: ...

    @abc.abstractmethod
    async def cache_hits(self, hits: dict[str, tuple[int, datetime]]) -> None:
        """Add hit counts and set the last hit time, for many keys at once."""

    @abc.abstractmethod
    async def cache_purge(self, now: datetime) -> int: ...

    @abc.abstractmethod
    async def response_put(self, kept: StoredResponse) -> None: ...

    @abc.abstractmethod
    async def response_get(
        self, organization: str, id: str, now: datetime
    ) -> StoredResponse | None:
        """The organization's unexpired response with this id; another's is not found."""

    @abc.abstractmethod
    async def response_delete(self, organization: str, id: str) -> bool: ...

    @abc.abstractmethod
    async def response_purge(self, now: datetime) -> int: ...

    @abc.abstractmethod
    async def spend(self, subjects: Sequence[tuple[str, str]], day: date, month: date) -> Spend:
        """Spend so far for (scope, subject) pairs in the given day and month."""
