"""The console's plots over time: periods with nothing in them still shown, groups
ranked by cost with the rest summed, and every figure the report's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from switchyard.router.storage.rollup import OTHER, Rollup, periods_between, report, series


def _roll(day: str, model: str, cost: str, requests: int = 1) -> Rollup:
    return Rollup(
        organization="o",
        day=date.fromisoformat(day),
        provider="p",
        model=model,
        task_type="",
        api_key="k",
        requests=requests,
        cost=Decimal(cost),
    )


def test_periods_cover_the_range_empty_ones_too() -> None:
    assert periods_between(date(2026, 2, 27), date(2026, 3, 2), "day") == [
        "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02",
    ]  # fmt: skip
    # Weeks are named by their Monday, as the usage API's groupBy=week names them.
    assert periods_between(date(2026, 11, 4), date(2026, 11, 23), "week") == [
        "2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23",
    ]  # fmt: skip
    assert periods_between(date(2025, 12, 31), date(2026, 3, 1), "month") == [
        "2025-12", "2026-01", "2026-02", "2026-03",
    ]  # fmt: skip
    assert periods_between(date(2026, 1, 5), date(2026, 1, 5), "week") == ["2026-01-05"]


def test_groups_are_ranked_by_cost_and_the_rest_summed() -> None:
    rollups = [
        _roll("2026-11-02", "a", "1.000000001"),
        _roll("2026-11-02", "b", "5"),
        _roll("2026-11-04", "b", "0.25", requests=3),
        _roll("2026-11-04", "c", "0.5"),
        _roll("2026-11-04", "d", "0.4"),
    ]
    periods = periods_between(date(2026, 11, 2), date(2026, 11, 4), "day")
    s = series(rollups, "day", "model", periods, top=2)
    assert s.groups == ["b", "a", OTHER]
    assert s.cost == [
        [Decimal(5), Decimal(0), Decimal("0.25")],
        [Decimal("1.000000001"), Decimal(0), Decimal(0)],
        [Decimal(0), Decimal(0), Decimal("0.9")],
    ]
    assert s.requests == [[1, 0, 3], [1, 0, 0], [0, 0, 2]]
    # The plot's sums are the report's, to the nano-dollar.
    groups, total = report(rollups, "model")
    by_key = {g.key: g.cost for g in groups}
    assert sum(s.cost[0]) == by_key["b"] and sum(s.cost[1]) == by_key["a"]
    assert sum(sum(row) for row in s.cost) == total.cost


def test_rollups_outside_the_periods_are_left_out() -> None:
    s = series([_roll("2026-10-01", "a", "1")], "day", "model", ["2026-11-01"])
    assert s.groups == ["a"] and s.cost == [[Decimal(0)]]
