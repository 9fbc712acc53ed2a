from __future__ import annotations

from switchyard.router.core.breaker import BreakerState, CircuitBreaker


def test_opens_after_threshold_then_half_opens_after_cooldown() -> None:
    b = CircuitBreaker(failure_threshold=3, cooldown_seconds=10)
    for _ in range(2):
        assert b.try_acquire(0)
        b.record_failure(0)
    assert b.state is BreakerState.CLOSED
    b.record_failure(1)
    assert b.state is BreakerState.OPEN
    assert not b.available(5) and not b.try_acquire(5)
    assert b.available(11)
    assert b.try_acquire(11)
    assert b.state is BreakerState.HALF_OPEN
    # One trial at a time.
    assert not b.try_acquire(11) and not b.available(11)


def test_half_open_success_closes_and_failure_reopens() -> None:
    b = CircuitBreaker(1, 10)
    b.record_failure(0)
    assert b.try_acquire(10)
    b.record_failure(10)
    assert b.state is BreakerState.OPEN and not b.available(15)
    assert b.try_acquire(20)
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 0


def test_retry_after_holds_the_provider_back() -> None:
    b = CircuitBreaker(5, 10)
    b.record_failure(100, retry_after=7)
    assert b.state is BreakerState.CLOSED
    assert not b.available(106.9)
    assert b.available(107)


def test_release_returns_an_unused_trial() -> None:
    b = CircuitBreaker(1, 1)
    b.record_failure(0)
    assert b.try_acquire(2)
    b.release()
    assert b.try_acquire(2)
