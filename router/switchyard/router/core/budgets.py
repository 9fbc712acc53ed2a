"""Spending limits per organization and per API key, per day and per month (UTC).

Spend lives in the database's counters, which every replica's usage writer
adds to; each replica reads them about once a second. Between reads, a
replica adds what it has spent itself and what is in flight (reserved at the
request's estimated cost, then settled at the real cost), so a replica never
overshoots on its own and replicas together overshoot by at most about one
refresh interval of spending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from switchyard.router.contract import Budget
from switchyard.router.core.caller import Caller
from switchyard.router.errors import BudgetExceeded
from switchyard.router.storage.base import Store
from switchyard.router.storage.records import UsageRecord, utcnow

log = logging.getLogger("switchyard.router.budgets")


class OverBudget(BudgetExceeded):
    def __init__(self, message: str, budget: dict[str, Any]) -> None:
        super().__init__(message)
        self.budget = budget

    def details(self) -> dict[str, Any]:
        return {"budget": self.budget}


@dataclass(slots=True)
class Reservation:
    subjects: list[tuple[str, str]]
    amount: Decimal


@dataclass(slots=True)
class _Pending:
    subjects: list[tuple[str, str]]
    cost: Decimal
    day: date
    month: date
    stored_at: float | None = None  # monotonic time the store committed it


_ADJECTIVE = {"day": "daily", "month": "monthly"}


def _usd(d: Decimal) -> str:
    return format(d.quantize(Decimal("0.000001")).normalize(), "f")


class BudgetGuard:
    def __init__(self, store: Store, refresh_interval: float = 1.0) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self._limits: dict[tuple[str, str], Budget] = {}
        self._db: dict[tuple[str, str, str, date], Decimal] = {}
        self._refreshed_at = float("-inf")
        self._reserved: dict[tuple[str, str], Decimal] = {}
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None

    def configure(self, budgets: list[Budget]) -> None:
        limits = {}
        for b in budgets:
            if b.api_key is None:
                limits[("organization", b.organization)] = b
            else:
                limits[("apiKey", f"{b.organization}/{b.api_key}")] = b
        self._limits = limits

    def subjects(self, caller: Caller) -> list[tuple[str, str]]:
        candidates = [
            ("organization", caller.organization),
            ("apiKey", f"{caller.organization}/{caller.key_name}"),
        ]
        return [s for s in candidates if s in self._limits]

    def spent(self, subject: tuple[str, str], period: str, start: date) -> Decimal:
        total = self._db.get((subject[0], subject[1], period, start), Decimal(0))
        for p in self._pending.values():
            if subject in p.subjects and (p.day if period == "day" else p.month) == start:
                total += p.cost
        return total + self._reserved.get(subject, Decimal(0))

    def reserve(
        self, caller: Caller, estimate: Decimal, now: datetime | None = None
    ) -> Reservation:
        subjects = self.subjects(caller)
        if not subjects:
            return Reservation([], Decimal(0))
        now = now or utcnow()
        day, month = now.date(), now.date().replace(day=1)
        for subject in subjects:
            budget = self._limits[subject]
            for period, limit, start in (
                ("day", budget.daily_usd, day),
                ("month", budget.monthly_usd, month),
            ):
                if limit is None:
                    continue
                spent = self.spent(subject, period, start)
                left = Decimal(limit) - spent
                if estimate > left or left <= 0:
                    who = "organization" if subject[0] == "organization" else "API key"
                    raise OverBudget(
                        f"the {_ADJECTIVE[period]} budget of {who} {subject[1]!r} cannot "
                        f"cover this request: {_usd(max(left, Decimal(0)))} USD left of "
                        f"{limit}, and it could cost up to {_usd(estimate)} USD",
                        {
                            "scope": subject[0],
                            "subject": subject[1],
                            "period": period,
                            "periodStart": start.isoformat(),
                            "limitUsd": limit,
                            "spentUsd": _usd(spent),
                            "remainingUsd": _usd(max(left, Decimal(0))),
                            "estimatedCostUsd": _usd(estimate),
                        },
                    )
        for subject in subjects:
            self._reserved[subject] = self._reserved.get(subject, Decimal(0)) + estimate
        return Reservation(subjects, estimate)

    def settle(self, reservation: Reservation, record: UsageRecord | None) -> None:
        """Release the reservation and count the real cost until the store has it."""
        for subject in reservation.subjects:
            self._reserved[subject] -= reservation.amount
            if not self._reserved[subject]:
                del self._reserved[subject]
        if record is not None and reservation.subjects and record.total_cost:
            at = record.requested_at
            self._pending[record.id] = _Pending(
                reservation.subjects, record.total_cost, at.date(), at.date().replace(day=1)
            )

    def stored(self, records: list[UsageRecord], at: float) -> None:
        for r in records:
            p = self._pending.get(r.id)
            if p is not None:
                p.stored_at = at

    async def refresh(self) -> None:
        if not self._limits:
            return
        started = time.monotonic()
        now = utcnow()
        spend = await self.store.spend(list(self._limits), now.date(), now.date().replace(day=1))
        self._db = spend.totals
        self._refreshed_at = started
        # What the store had committed before this read is now in the counters.
        for rid in [
            k for k, p in self._pending.items() if p.stored_at is not None and p.stored_at < started
        ]:
            del self._pending[rid]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("reading spend failed, keeping the last view: %s", exc)
            await asyncio.sleep(self.refresh_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
