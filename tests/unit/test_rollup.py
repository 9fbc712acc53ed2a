from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta

from switchyard.router.storage import histogram
from switchyard.router.storage.rollup import Rollup, report, rollups_of, split_days
from tests.support.usage_rows import usage_record


def test_split_days() -> None:
    t = lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC)  # noqa: E731
    assert split_days(t("2026-10-01"), t("2026-11-01")) == (
        date(2026, 10, 1),
        date(2026, 11, 1),
        [],
    )
    first, last, edges = split_days(t("2026-10-01T06:00"), t("2026-10-03T12:00"))
    assert (first, last) == (date(2026, 10, 2), date(2026, 10, 3))
    assert edges == [
        (t("2026-10-01T06:00"), t("2026-10-02")),
        (t("2026-10-03"), t("2026-10-03T12:00")),
    ]
    first, last, edges = split_days(t("2026-10-01T06:00"), t("2026-10-01T08:00"))
    assert first >= last and edges == [(t("2026-10-01T06:00"), t("2026-10-01T08:00"))]


def test_histogram_percentiles_stay_within_the_bucket_resolution() -> None:
    rng = random.Random(3)
    for _ in range(50):
        values = [math.exp(rng.uniform(math.log(0.2), math.log(300_000))) for _ in range(501)]
        hist = histogram.empty()
        for v in values:
            hist[histogram.bucket(v)] += 1
        ordered = sorted(values)
        for p in (0.5, 0.95):
            exact = ordered[math.ceil(p * len(values)) - 1]
            got = histogram.percentile(hist, p)
            assert got is not None and abs(got / exact - 1) < 0.032
    assert histogram.percentile(histogram.empty(), 0.5) is None


def test_rollups_and_reports_by_api_key() -> None:
    at = datetime(2026, 10, 1, 12, tzinfo=UTC)
    records = [
        usage_record(organization="o", api_key=key, requested_at=at + timedelta(minutes=i))
        for i, key in enumerate(["a", "b", "a", "a"])
    ]
    rollups = rollups_of(records)
    assert sorted((r.key, r.requests) for r in rollups) == [
        (("o", date(2026, 10, 1), "p", "m", "", "a"), 3),
        (("o", date(2026, 10, 1), "p", "m", "", "b"), 1),
    ]
    # A rollup from before keys were counted apart has the key "": none.
    older = Rollup("o", date(2026, 9, 30), "p", "m", "", "", requests=2)
    groups, total = report([*rollups, older], "apiKey")
    assert [(g.key, g.requests) for g in groups] == [("(none)", 2), ("a", 3), ("b", 1)]
    assert total.requests == 6
