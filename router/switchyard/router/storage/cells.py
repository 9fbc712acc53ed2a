"""A rate budget as the shared state keeps it: a module of its own, so that the serving
core names budgets without loading the Redis client (imported only with --redis-url)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cell:
    """One budget: ``per_minute`` units a minute, all of them available at once."""

    key: str
    per_minute: int

    def args(self, amount: float) -> tuple[int, int, float]:
        interval = 60_000_000 // self.per_minute  # µs per unit
        return interval, interval * self.per_minute, amount
