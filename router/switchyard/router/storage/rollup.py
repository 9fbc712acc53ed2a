"""Daily usage rollups, and usage reports assembled from them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from switchyard.router.storage import histogram
from switchyard.router.storage.columns import HEDGE_STATUSES as HEDGE_STATUSES
from switchyard.router.storage.columns import HEDGES_SQL as HEDGES_SQL
from switchyard.router.storage.records import UsageRecord

GroupBy = Literal["day", "week", "month", "model", "task", "provider", "apiKey"]
GROUP_BY: tuple[GroupBy, ...] = ("day", "week", "month", "model", "task", "provider", "apiKey")
#: organization, day, provider, model, task, API key name ("" = none)
RollupKey = tuple[str, date, str, str, str, str]


#: The histogram of a rollup that keeps no latencies (per API key): shared by all of
#: them, so never added into; a report merges rollups into fresh ones of its own.
NO_LATENCY: list[int] = histogram.empty()


@dataclass(slots=True)
class Rollup:
    organization: str
    day: date
    provider: str
    model: str
    task_type: str
    #: Daily rollups per provider, model and task leave it ''; those per API key
    #: (``llm_usage_daily_keys``) leave those three '', and keep no latency histogram.
    api_key: str
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    saved_cost: Decimal = Decimal(0)
    hist: list[int] = field(default_factory=histogram.empty)
    hedged: int = 0  # calls that did not answer their request, paid for all the same

    @property
    def key(self) -> RollupKey:
        return (
            self.organization,
            self.day,
            self.provider,
            self.model,
            self.task_type,
            self.api_key,
        )

    def add(self, r: UsageRecord) -> None:
        if r.status in HEDGE_STATUSES:
            self.hedged += 1
        else:
            self.requests += 1
        self.errors += r.status == "error"
        self.cache_hits += r.cache_hit
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost += r.total_cost
        self.saved_cost += r.saved_cost
        if r.latency_ms is not None:
            self.hist[histogram.bucket(r.latency_ms)] += 1

    def merge(self, o: Rollup) -> None:
        self.requests += o.requests
        self.errors += o.errors
        self.cache_hits += o.cache_hits
        self.prompt_tokens += o.prompt_tokens
        self.completion_tokens += o.completion_tokens
        self.cost += o.cost
        self.saved_cost += o.saved_cost
        self.hedged += o.hedged
        histogram.add_into(self.hist, o.hist)


def summed(sums: Sequence[Any], bucket: int, money: Callable[[Any], Decimal]) -> Rollup:
    """The counts of one row a database summed (requests, errors, cache hits, prompt and
    completion tokens, cost, saved cost, hedged calls) of records in one latency
    ``bucket`` (-1: no latency); the caller merges it into the rollup of its day and
    group."""
    n, errors, hits, prompt, completion, cost, saved, hedged = sums
    roll = Rollup("", date.min, "", "", "", "")
    roll.requests = int(n or 0)
    roll.hedged = int(hedged or 0)
    roll.errors = int(errors or 0)
    roll.cache_hits = int(hits or 0)
    roll.prompt_tokens = int(prompt or 0)
    roll.completion_tokens = int(completion or 0)
    roll.cost = money(cost)
    roll.saved_cost = money(saved)
    if bucket >= 0:
        roll.hist[bucket] = roll.requests
    return roll


def rollups_of(records: Iterable[UsageRecord]) -> list[Rollup]:
    out: dict[RollupKey, Rollup] = {}
    for r in records:
        key = (
            r.organization,
            r.requested_at.astimezone(UTC).date(),
            r.provider or "",
            r.model or "",
            r.task_type or "",
            r.api_key,
        )
        roll = out.get(key)
        if roll is None:
            roll = out[key] = Rollup(*key)
        roll.add(r)
    return list(out.values())


@dataclass(slots=True)
class UsageRow:
    """One group of a usage report."""

    key: str
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    saved_cost: Decimal = Decimal(0)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    hedged: int = 0


def _group(r: Rollup, group_by: GroupBy) -> str:
    if group_by == "day" or group_by == "week" or group_by == "month":
        return _period_key(r.day, group_by)
    value = {
        "model": r.model,
        "task": r.task_type,
        "provider": r.provider,
        "apiKey": r.api_key,
    }[group_by]
    return value or "(none)"


def report(rollups: Iterable[Rollup], group_by: GroupBy) -> tuple[list[UsageRow], UsageRow]:
    groups: dict[str, Rollup] = {}
    for r in rollups:
        key = _group(r, group_by)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Rollup("", r.day, "", "", "", "")
        g.merge(r)
    total = Rollup("", date.min, "", "", "", "")
    for g in groups.values():  # fewer merges than the rollups'
        total.merge(g)

    def row(key: str, r: Rollup) -> UsageRow:
        return UsageRow(
            key,
            r.requests,
            r.errors,
            r.cache_hits,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
            r.saved_cost,
            histogram.percentile(r.hist, 0.5),
            histogram.percentile(r.hist, 0.95),
            r.hedged,
        )

    return [row(k, groups[k]) for k in sorted(groups)], row("total", total)


def split_days(
    start: datetime, end: datetime
) -> tuple[date, date, list[tuple[datetime, datetime]]]:
    """Whole UTC days inside [start, end), and the partial stretches at either side.

    Returns (first whole day, day after the last whole day, partial ranges).
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start.date() if start.time() == time.min else start.date() + timedelta(days=1)
    last = end.date()  # exclusive
    if first >= last:
        return first, first, [(start, end)]
    edges = []
    first_midnight = datetime.combine(first, time.min, UTC)
    last_midnight = datetime.combine(last, time.min, UTC)
    if start < first_midnight:
        edges.append((start, first_midnight))
    if last_midnight < end:
        edges.append((last_midnight, end))
    return first, last, edges


#: The groupings that are periods of time, and those that are a dimension.
TimeGroup = Literal["day", "week", "month"]
OTHER = "(other)"


def periods_between(start: date, end: date, period: TimeGroup) -> list[str]:
    """The keys (as ``report`` names them) of every ``period`` touching the days
    [start, end], in order: a plot over time shows the empty ones too."""
    keys: list[str] = []
    day = start
    while day <= end:
        key = _period_key(day, period)
        if not keys or keys[-1] != key:
            keys.append(key)
        if period == "day":
            day += timedelta(days=1)
        elif period == "week":
            day += timedelta(days=7 - day.weekday())
        else:
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return keys


def _period_key(day: date, period: TimeGroup) -> str:
    if period == "day":
        return day.isoformat()
    if period == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    return day.strftime("%Y-%m")


@dataclass(slots=True)
class Series:
    """Cost and requests per period, split by one dimension: what a stacked plot shows.

    ``groups`` are the dimension's values, most costly first; past ``top`` of them the
    rest are summed as one ``OTHER``. ``cost[g][p]`` is group g's cost in period p."""

    periods: list[str]
    groups: list[str]
    cost: list[list[Decimal]]
    requests: list[list[int]]


def series(
    rollups: Iterable[Rollup], period: TimeGroup, by: GroupBy, periods: list[str], top: int = 8
) -> Series:
    rows = list(rollups)
    totals: dict[str, Decimal] = {}
    for r in rows:
        name = _group(r, by)
        totals[name] = totals.get(name, Decimal(0)) + r.cost
    ranked = sorted(totals, key=lambda g: (-totals[g], g))
    groups = ranked[:top] + ([OTHER] if len(ranked) > top else [])
    row_of = {g: min(i, top) for i, g in enumerate(ranked)}
    column = {p: i for i, p in enumerate(periods)}
    cost = [[Decimal(0)] * len(periods) for _ in groups]
    requests = [[0] * len(periods) for _ in groups]
    for r in rows:
        p = column.get(_period_key(r.day, period))
        if p is None:
            continue
        row = row_of[_group(r, by)]
        cost[row][p] += r.cost
        requests[row][p] += r.requests
    return Series(periods, groups, cost, requests)
