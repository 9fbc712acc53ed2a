"""A usage record: one per completion served, whatever its outcome."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

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


_prefix = ("", 0)  # (random hex, pid it was made in)
_counter = itertools.count()


def new_id() -> str:
    """A unique id in UUID form: 80 random bits per process, then a counter.

    A tenth of uuid4()'s cost; ids from different processes, replicas and
    restarts differ by their random part.
    """
    global _prefix
    pid = os.getpid()
    if _prefix[1] != pid:  # a forked child must not repeat its parent's ids
        _prefix = (uuid.uuid4().hex[:20], pid)
    h = f"{_prefix[0]}{next(_counter):012x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)
