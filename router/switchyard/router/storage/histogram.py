"""Latency histograms: 256 log-spaced buckets from 0.1 ms to 10 minutes.

Usage rollups keep one per group and day, so percentiles over any number of
records cost a merge of small arrays. A bucket spans about 6.3%; a reported
percentile is the geometric middle of its bucket, so it is within about 3.2%
of the exact nearest-rank value.
"""

from __future__ import annotations

import math
import operator

# For the checkers only: the SQLite usage writer imports this module, and nothing else
# there needs ``collections``.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

BUCKETS = 256
LOW_MS = 0.1
HIGH_MS = 600_000.0
_LOG_LOW = math.log(LOW_MS)
STEP = (math.log(HIGH_MS) - _LOG_LOW) / BUCKETS
_STEP = STEP


def bucket(ms: float) -> int:
    if ms <= LOW_MS:
        return 0
    return min(BUCKETS - 1, int((math.log(ms) - _LOG_LOW) / _STEP))


def value(index: int) -> float:
    """The geometric middle of a bucket."""
    return math.exp(_LOG_LOW + (index + 0.5) * _STEP)


def empty() -> list[int]:
    return [0] * BUCKETS


def add_into(total: list[int], other: Iterable[int]) -> None:
    total[:] = map(operator.add, total, other)  # a report merges hundreds: keep it in C


def percentile(hist: list[int], p: float) -> float | None:
    """Nearest rank: the value of the ceil(p·n)-th smallest latency."""
    n = sum(hist)
    if n == 0:
        return None
    rank = max(1, math.ceil(p * n))
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return value(i)
    return value(BUCKETS - 1)
