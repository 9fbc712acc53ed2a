"""The stall deadline a route's recent latencies give."""

from __future__ import annotations

from switchyard.router.contract import StallSettings
from switchyard.router.core.stall import WINDOW, LatencyWindow

SETTINGS = StallSettings(multiplier=3, floor_ms=250, min_samples=20)


def test_no_deadline_until_the_route_has_answered_enough() -> None:
    w = LatencyWindow()
    for _ in range(19):
        w.observe(0.1)
    assert w.deadline(SETTINGS, cap=30) is None
    w.observe(0.1)
    assert w.deadline(SETTINGS, cap=30) == 0.1 * 3


def test_the_floor_and_the_fixed_timeout_bound_it() -> None:
    w = LatencyWindow()
    for _ in range(20):
        w.observe(0.01)
    assert w.deadline(SETTINGS, cap=30) == 0.25
    for _ in range(WINDOW):
        w.observe(20.0)
    assert w.deadline(SETTINGS, cap=30) is None  # 60 s: the fixed timeout comes first


def test_the_deadline_follows_the_99th_percentile_of_the_latest_answers() -> None:
    w = LatencyWindow()
    for i in range(1000):
        w.observe(1.0 if i % 100 == 0 else 0.2)  # 1% slow answers
    assert 0.2 * 3 <= w.deadline(SETTINGS, cap=30) <= 1.0 * 3
    for _ in range(WINDOW):
        w.observe(0.5)  # the provider became slower: its deadline grows
    assert w.deadline(SETTINGS, cap=30) == 1.5
