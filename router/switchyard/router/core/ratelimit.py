"""Per-provider requests/minute and tokens/minute budgets.

Token buckets that refill continuously. A provider without budget is skipped,
never waited on. Tokens are reserved from an estimate before a call and
reconciled with the real usage after it. With shared state (``storage.shared_state``)
the same budgets live in Redis, one for all replicas (``cells``); these buckets are
then what a replica falls back on while Redis is away, each holding its share of the
limits (1/N of N processes, as last counted on Redis).
"""

from __future__ import annotations

from switchyard.router.storage.cells import Cell


class Bucket:
    __slots__ = ("_capacity", "_level", "_rate", "_stamp")

    def __init__(self, per_minute: int, now: float) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = float(per_minute)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now

    def has(self, amount: float, now: float) -> bool:
        self._refill(now)
        return self._level >= min(amount, self._capacity)

    def take(self, amount: float, now: float) -> bool:
        self._refill(now)
        # A single request larger than the whole budget may still go when the
        # bucket is full; otherwise it could never be served.
        if self._level >= min(amount, self._capacity):
            self._level -= amount
            return True
        return False

    def give(self, amount: float) -> None:
        self._level = min(self._capacity, self._level + amount)

    def resize(self, per_minute: int) -> None:
        """A new share of the limit; never more at hand than the new size."""
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = min(self._level, self._capacity)

    def ready_in(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` (at most the capacity) is there."""
        self._refill(now)
        short = min(amount, self._capacity) - self._level
        return max(short / self._rate, 0.0)

    @property
    def level(self) -> float:
        return self._level


class RateLimiter:
    __slots__ = ("request_cell", "requests", "token_cell", "tokens")

    def __init__(
        self, rpm: int | None, tpm: int | None, now: float, key: str = "", processes: int = 1
    ) -> None:
        # This process's own budgets: its share when several serve one port (--workers).
        self.requests = Bucket(max(1, rpm // processes), now) if rpm else None
        self.tokens = Bucket(max(1, tpm // processes), now) if tpm else None
        #: The same budgets, shared by every replica (when the router has shared state).
        self.request_cell = Cell(f"{key}:rpm", rpm) if rpm else None
        self.token_cell = Cell(f"{key}:tpm", tpm) if tpm else None

    def share(self, rpm: int | None, tpm: int | None, processes: int) -> None:
        """Keep 1/``processes`` of the limits, the others keeping theirs."""
        if self.requests is not None and rpm:
            self.requests.resize(max(1, rpm // processes))
        if self.tokens is not None and tpm:
            self.tokens.resize(max(1, tpm // processes))

    def has_budget(self, tokens: int, now: float) -> bool:
        if self.requests is not None and not self.requests.has(1, now):
            return False
        return self.tokens is None or self.tokens.has(tokens, now)

    def ready_in(self, tokens: int, now: float) -> float:
        """Seconds until one request of ``tokens`` fits both budgets."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.ready_in(1, now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.ready_in(tokens, now))
        return wait

    def try_acquire(self, tokens: int, now: float) -> bool:
        if self.requests is not None and not self.requests.take(1, now):
            return False
        if self.tokens is not None and not self.tokens.take(tokens, now):
            if self.requests is not None:
                self.requests.give(1)
            return False
        return True

    def reconcile(self, estimated: int, actual: int) -> None:
        """Return what was over-reserved, or take what was under-reserved."""
        if self.tokens is not None:
            self.tokens.give(estimated - actual)
