"""A usage record: one per completion served, whatever its outcome."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from time import time_ns
from typing import Any, NamedTuple, TypeVar

from switchyard.router.storage.columns import COLUMNS as COLUMNS

T = TypeVar("T")


class UsageRecord(NamedTuple):
    """Immutable and made of atoms: a tuple, which the cyclic collector soon stops
    tracking, so thousands of queued records cost it nothing."""

    id: str  # UUID; makes writing idempotent, so a replay stores each record once
    organization: str
    api_key: str  # the key's name, never the key
    api: str  # native | openai | anthropic
    provider: str | None
    model: str | None
    task_type: str | None
    prompt_tokens: int
    completion_tokens: int
    input_cost: Decimal
    output_cost: Decimal
    saved_cost: Decimal  # what a cache hit would have cost
    latency_ms: float | None
    ttft_ms: float | None
    status: str  # ok | error
    http_status: int
    error_class: str | None
    cache_hit: bool
    stream: bool
    requested_at: datetime
    completed_at: datetime
    #: The request's OpenTelemetry trace (32 lowercase hex digits) when it was traced.
    #: Last, with a default: records spooled before it existed still load.
    trace_id: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def total_cost(self) -> Decimal:
        return self.input_cost + self.output_cost

    def to_json(self) -> dict[str, Any]:
        d = self._asdict()
        for k in ("input_cost", "output_cost", "saved_cost"):
            d[k] = str(d[k])
        d["requested_at"] = self.requested_at.isoformat()
        d["completed_at"] = self.completed_at.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UsageRecord:
        d = dict(d)
        for k in ("input_cost", "output_cost", "saved_cost"):
            d[k] = Decimal(d[k])
        d["requested_at"] = datetime.fromisoformat(d["requested_at"])
        d["completed_at"] = datetime.fromisoformat(d["completed_at"])
        return cls(**d)


async def to_rows(records: Sequence[UsageRecord], row: Callable[[UsageRecord], T]) -> list[T]:
    """Convert records a slice at a time, letting requests run in between: a batch
    of thousands converted at once would stall the event loop for milliseconds."""
    out: list[T] = []
    for start in range(0, len(records), 256):
        out.extend(row(r) for r in records[start : start + 256])
        await asyncio.sleep(0)
    return out


def record_from_row(
    r: Sequence[Any], money: Callable[[Any], Any], when: Callable[[Any], Any]
) -> UsageRecord:
    """A record from an llm_requests row in COLUMNS order (totals are derived)."""
    return UsageRecord(
        id=str(r[0]),
        organization=r[1],
        api_key=r[2],
        api=r[3],
        provider=r[4],
        model=r[5],
        task_type=r[6],
        prompt_tokens=r[7],
        completion_tokens=r[8],
        input_cost=money(r[10]),
        output_cost=money(r[11]),
        saved_cost=money(r[13]),
        latency_ms=r[14],
        ttft_ms=r[15],
        status=r[16],
        http_status=r[17],
        error_class=r[18],
        cache_hit=bool(r[19]),
        stream=bool(r[20]),
        requested_at=when(r[21]),
        completed_at=when(r[22]),
        trace_id=r[23],
    )


#: The variant nibble of an RFC 4122 UUID, by the two random bits it keeps.
_VARIANT = "89ab"


#: Random bits for the next ids, 19 hex digits each (74 random bits, the 2 of the variant
#: nibble among them): one system call for 256 ids rather than one each. A forked child
#: draws its own: it must not hand out its parent's ids.
_random: list[str] = []
os.register_at_fork(after_in_child=_random.clear)


def new_id() -> str:
    """A version-7 UUID (RFC 9562): the millisecond it was made, then 74 random bits.

    Tenants are shown these, so they must say nothing of anyone else's traffic (a
    counter would count it) and must not be guessable: the time is the request's own,
    and the rest is the system's random source. Ids in time order are what keeps
    storing them cheap: each is the primary key of its record, and random keys (version
    4) put every insert on a page of the key's index of its own, read and written back
    whole at each commit (SQLite's writer spent 34 us a record on a table of 100,000, 10
    in time order; a PostgreSQL b-tree larger than its shared buffers is no different).

    Formatted from the clock and the random bytes directly: ``uuid`` would take several
    times as long, and a request makes one."""
    if not _random:
        pool = os.urandom(10 * 256).hex()
        _random.extend(pool[i : i + 19] for i in range(0, len(pool), 20))
    h = _random.pop()
    ms = f"{time_ns() // 1_000_000:012x}"
    return f"{ms[:8]}-{ms[8:]}-7{h[:3]}-{_VARIANT[int(h[3], 16) & 3]}{h[4:7]}-{h[7:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)
