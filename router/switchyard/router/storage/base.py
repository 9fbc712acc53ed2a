"""The one interface both stores implement."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from switchyard.router.storage.records import COLUMNS, UsageRecord
from switchyard.router.storage.rollup import (
    GROUP_BY,
    HEDGES_SQL,
    GroupBy,
    Rollup,
    UsageRow,
    report,
    rollups_of,
    split_days,
)

__all__ = ["GROUP_BY", "GroupBy", "Rollup", "UsageRow"]


class StoreError(Exception):
    """The store failed. Each store maps its driver's errors to these at its boundary, so
    the rest of the router never sees a driver's exception."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or did not answer in time; try again later."""


class StoreRefused(StoreError):
    """The database answered but refused this data (a value it cannot hold, a
    duplicate): trying again will not help."""


@dataclass(slots=True)
class CacheEntry:
    key: str
    organization: str
    response: dict[str, Any]  # the neutral result, serialized
    cost: Decimal  # what the answer cost when it was made
    created_at: datetime
    expires_at: datetime
    hit_count: int = 0


#: What ``Store.recent_requests`` lists: the slowest requests, or the failed ones.
RecentKind = Literal["slowest", "failed"]
#: The most records ``Store.recent_requests`` returns.
MAX_RECENT = 100


def recent_limit(limit: int) -> int:
    """``limit`` taken within 1 and MAX_RECENT: a caller cannot ask for a scan's worth."""
    return max(1, min(limit, MAX_RECENT))


#: What each kind of ``recent_requests`` keeps, and its order.
_RECENT: dict[RecentKind, tuple[str, str]] = {
    "slowest": (f"status NOT IN {HEDGES_SQL} AND latency_ms IS NOT NULL", "latency_ms DESC"),
    "failed": ("status = 'error'", "requested_at DESC"),
}


def recent_sql(kind: RecentKind, mark: str) -> str:
    """``recent_requests``' query in either dialect (``mark``: its placeholder, for the
    organization, the time since and the limit). The records are picked by the inner
    query from the (organization, requested_at, latency_ms, status) index alone, and only
    those picked are read: an hour of a busy organization is a hundred thousand records."""
    where, order = _RECENT[kind]
    return (
        f"SELECT {', '.join(COLUMNS)} FROM llm_requests WHERE id IN (SELECT id FROM "
        f"llm_requests WHERE organization = {mark} AND requested_at >= {mark} AND {where} "
        f"ORDER BY {order} LIMIT {mark}) ORDER BY {order}"
    )


#: A kept conversation's kind: Responses API answers, or Anthropic message threads.
TurnKind = Literal["response", "thread"]


@dataclass(slots=True)
class Turn:
    """One turn of a kept conversation, stored once: what this request added and the
    answer it got, pointing back at the turn it continued. A conversation is its chain
    of turns, so what is stored grows with the conversation, not with its square.

    Content is JSON as bytes, written and read without being parsed by the store."""

    id: str
    organization: str
    kind: TurnKind
    previous_id: str | None
    depth: int  # turns before this one
    answer: bytes  # the response object (or the thread's reply) as the client got it
    items: bytes  # this turn's own input: a JSON array
    context: bytes | None  # a thread's system prompt and tools, held from its create
    #: The conversation through this turn: stored bytes and estimated tokens.
    conversation_bytes: int
    conversation_tokens: int
    created_at: datetime
    expires_at: datetime


@dataclass(slots=True, frozen=True)
class TurnHead:
    """What is known of a turn before its conversation is read: enough to refuse a
    continuation that would be too large without loading it."""

    id: str
    kind: TurnKind
    depth: int
    conversation_bytes: int
    conversation_tokens: int


@dataclass(slots=True, frozen=True)
class StoredTurn:
    """A turn as a chain read gives it; ``answer`` and ``items`` are None for a turn
    whose content was deleted (it stays while later turns point at it)."""

    id: str
    depth: int
    answer: bytes | None
    items: bytes | None
    context: bytes | None


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
        rollups = await self.usage_range(organization, start, end, by_key=group_by == "apiKey")
        return report(rollups, group_by)

    async def usage_range(
        self, organization: str, start: datetime, end: datetime, *, by_key: bool = False
    ) -> list[Rollup]:
        """Rollups covering [start, end): whole days from the daily rollups (``by_key``:
        those per API key, which keep no latencies), partial days at the edges from the
        records."""
        whole = self.usage_key_rollups if by_key else self.usage_rollups
        first, last, edges = split_days(start, end)
        rollups = await whole(organization, first, last) if first < last else []
        # A range that ends now (the caller's "now", a moment ago) takes today so far from
        # today's rollup, which holds every record of it already.
        recent = datetime.now(UTC) - timedelta(seconds=60)
        for lo, hi in edges:
            if hi >= recent and lo.time() == time.min:
                day = lo.date()
                rollups += await whole(organization, day, day + timedelta(days=1))
            else:
                rollups += await self.usage_partial(organization, lo, hi)
        return rollups

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
    async def usage_key_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        """Daily rollups per API key for days in [first, last): requests, errors, tokens and
        cost, without provider, model, task or latencies. Kept apart from the others, so
        that those do not multiply with an organization's keys."""

    @abc.abstractmethod
    async def usage_records(
        self, organization: str, start: datetime, end: datetime
    ) -> list[UsageRecord]:
        """Records requested in [start, end)."""

    @abc.abstractmethod
    async def recent_requests(
        self, organization: str, since: datetime, kind: RecentKind, limit: int
    ) -> list[UsageRecord]:
        """The organization's records requested at or after ``since``, at most ``limit``
        (``recent_limit``). "slowest": those with a latency, slowest first, leaving out
        calls that did not answer a request (``HEDGE_STATUSES``); "failed": those whose
        status is error, newest first. Read along the (organization, requested_at)
        index, so ``since`` is meant to be recent: the last hour."""

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
    async def turn_put(self, turn: Turn) -> None: ...

    @abc.abstractmethod
    async def turn_head(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> TurnHead | None:
        """The organization's unexpired, undeleted turn of this kind with this id;
        another organization's is not found."""

    @abc.abstractmethod
    async def turn_answer(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> bytes | None:
        """Only the answer of such a turn: never its conversation."""

    @abc.abstractmethod
    async def turn_chain(self, organization: str, id: str) -> list[StoredTurn]:
        """The turns from the conversation's first to ``id``, in order; every one the
        organization's. Turns that expired stay readable while a later turn points at
        them (``turn_purge``)."""

    @abc.abstractmethod
    async def turn_delete(self, organization: str, kind: TurnKind, id: str) -> bool:
        """Remove the turn's content; a turn that later turns point at stays as a
        marker without content until they go. False when there was none to delete."""

    @abc.abstractmethod
    async def turn_purge(self, now: datetime, batch: int = 5000) -> int:
        """Delete expired turns that no unexpired turn depends on: a conversation is
        kept while any of its turns is, and goes once all of them have expired."""

    @abc.abstractmethod
    async def spend(self, subjects: Sequence[tuple[str, str]], day: date, month: date) -> Spend:
        """Spend so far for (scope, subject) pairs in the given day and month."""
