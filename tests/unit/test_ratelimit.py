from __future__ import annotations

from switchyard.router.core.ratelimit import RateLimiter


def test_requests_per_minute_refill_continuously() -> None:
    r = RateLimiter(rpm=60, tpm=None, now=0)
    for _ in range(60):
        assert r.try_acquire(0, 0)
    assert not r.has_budget(0, 0) and not r.try_acquire(0, 0)
    assert r.try_acquire(0, 1.0)  # one request a second comes back


def test_tokens_are_reserved_and_reconciled() -> None:
    r = RateLimiter(rpm=None, tpm=1000, now=0)
    assert r.try_acquire(800, 0)
    assert not r.has_budget(300, 0)
    r.reconcile(estimated=800, actual=100)  # 700 returned
    assert r.has_budget(800, 0)


def test_a_failed_token_take_gives_the_request_back() -> None:
    r = RateLimiter(rpm=1, tpm=10, now=0)
    assert r.try_acquire(10, 0)
    r2 = RateLimiter(rpm=2, tpm=10, now=0)
    assert r2.try_acquire(10, 0)
    assert not r2.try_acquire(5, 0)
    assert r2.requests is not None and r2.requests.level == 1


def test_one_request_bigger_than_the_budget_can_still_go_when_full() -> None:
    r = RateLimiter(rpm=None, tpm=100, now=0)
    assert r.try_acquire(500, 0)
    assert not r.try_acquire(1, 0)


def test_a_share_of_the_limit_holds_no_more_than_its_size_and_refills_at_its_rate() -> None:
    r = RateLimiter(rpm=60, tpm=6000, now=0)
    r.share(60, 6000, 3)  # three processes counted on the shared state
    for _ in range(20):
        assert r.try_acquire(0, 0)
    assert not r.try_acquire(0, 0)
    assert not r.try_acquire(0, 2.9)  # a third of one a second
    assert r.try_acquire(0, 3.01)
    assert r.tokens is not None and r.tokens.level == 2000
    r.share(60, 6000, 1)  # back to one: the whole limit, refilling from where it is
    assert r.requests is not None and r.requests.level < 1
    assert r.try_acquire(0, 4.02)
