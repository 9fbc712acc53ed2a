"""The request path's lock-free counters and histograms expose exactly what the
library's own classes expose for the same observations, and fail the same way."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from switchyard.router.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
AMOUNTS = (0.0, 0.005, 0.0050001, 0.3, 1, 1.0000001, 10, 11, 1e9, math.inf, -1.0, -math.inf)


def _exposed(counter: type[Counter], histogram: type[Histogram]) -> list[str]:
    r = CollectorRegistry()
    c = counter("c", "a counter", ["a"], registry=r)
    plain = counter("plain", "unlabelled", registry=r)
    h = histogram("h", "a histogram", ["a"], buckets=BUCKETS, registry=r)
    for i, amount in enumerate(AMOUNTS):
        h.labels(str(i % 3)).observe(amount)
        if amount >= 0:
            c.labels(str(i % 2)).inc(amount)
            plain.inc()
    h.labels("nan").observe(math.nan)
    h.labels("x").observe(0.2, {"trace_id": "abc"})
    c.labels("x").inc(2, {"trace_id": "abc"})
    text = generate_latest(r).decode()
    # Creation times differ between the two registries; nothing else may.
    return [line for line in text.splitlines() if "_created" not in line]


def test_loop_metrics_expose_what_the_library_exposes() -> None:
    assert _exposed(LoopCounter, LoopHistogram) == _exposed(Counter, Histogram)


def test_loop_metrics_refuse_what_the_library_refuses() -> None:
    r = CollectorRegistry()
    c = LoopCounter("c", "a counter", ["a"], registry=r)
    h = LoopHistogram("h", "a histogram", ["a"], registry=r)
    with pytest.raises(ValueError, match="non-negative"):
        c.labels("x").inc(-1)
    with pytest.raises(ValueError, match="missing label values"):
        c.inc()
    with pytest.raises(ValueError, match="missing label values"):
        h.observe(1)
