"""Budget periods and usage-report buckets, all in UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

from switchyard.router.storage.records import UsageRecord


def day_of(ts: datetime) -> date:
    return ts.date()


def month_of(ts: datetime) -> date:
    return ts.date().replace(day=1)


def spend_keys(r: UsageRecord) -> Iterator[tuple[str, str, str, date]]:
    """The spend counters a record adds to: its organization and its key, per day and month."""
    day, month = day_of(r.requested_at), month_of(r.requested_at)
    for scope, subject in (
        ("organization", r.organization),
        ("apiKey", f"{r.organization}/{r.api_key}"),
    ):
        yield scope, subject, "day", day
        yield scope, subject, "month", month
