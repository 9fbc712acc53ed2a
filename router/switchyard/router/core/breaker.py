"""A circuit breaker per provider: closed → open after repeated failures → half-open.

Open: the provider is skipped until the cooldown ends. Half-open: one trial
request goes through; its success closes the breaker, its failure opens it
again. A provider's ``Retry-After`` holds it back the same way, for as long as
the provider asked (capped).
"""

from __future__ import annotations

from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    __slots__ = (
        "_cooldown",
        "_failures",
        "_opened_at",
        "_resume_at",
        "_threshold",
        "_trial_in_flight",
        "state",
    )

    def __init__(self, failure_threshold: int, cooldown_seconds: float) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._failures = 0
        self._opened_at = 0.0
        self._resume_at = 0.0  # from Retry-After
        self._trial_in_flight = False
        self.state = BreakerState.CLOSED

    def configure(self, failure_threshold: int, cooldown_seconds: float) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def available(self, now: float) -> bool:
        """Could a request be sent now? (Does not claim the half-open trial.)"""
        if now < self._resume_at:
            return False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self._opened_at >= self._cooldown
        return not self._trial_in_flight

    def ready_in(self, now: float) -> float:
        """Seconds until a request could be sent (0: now)."""
        wait = self._resume_at - now
        if self.state is BreakerState.OPEN:
            wait = max(wait, self._cooldown - (now - self._opened_at))
        elif self.state is BreakerState.HALF_OPEN and self._trial_in_flight:
            wait = max(wait, 1.0)  # the trial's answer decides; ask again soon
        return max(wait, 0.0)

    def try_acquire(self, now: float) -> bool:
        """Claim the right to send one request now."""
        if now < self._resume_at:
            return False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self._cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        if self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        self.state = BreakerState.CLOSED

    def record_failure(self, now: float, retry_after: float | None = None) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if retry_after is not None and retry_after > 0:
            self._resume_at = max(self._resume_at, now + retry_after)
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self.state = BreakerState.OPEN
            self._opened_at = now

    def force_open(self, now: float) -> None:
        """Another replica's breaker for this provider opened: open this one too."""
        self.state = BreakerState.OPEN
        self._opened_at = now
        self._trial_in_flight = False

    def hold(self, until: float) -> None:
        """Another replica was told to wait (Retry-After): wait as well."""
        self._resume_at = max(self._resume_at, until)

    def release(self) -> None:
        """Give back a claimed trial that was never sent (e.g. rate-limited locally)."""
        self._trial_in_flight = False
