"""Spending limits per organization and per API key, per day and per month (UTC).

Spend lives in the database's counters, which every replica's usage writer
adds to; each replica reads them about once a second. Between reads, a
replica adds what it has spent itself and what is in flight (reserved at the
request's estimated cost, then settled at the real cost), so a replica never
overshoots on its own.

With shared state (Redis), what is in flight and what is not yet committed is
held there for every replica and worker together (``redis_scripts``), so
together they do not overshoot either; where the views overlap (a cost committed
within 50 ms of a read) a cost may count twice for a moment, which errs on the
side of refusing. Redis keeps what is open for ``HOLD_SECONDS``: a request
running longer loses its hold, and a replica whose database reads have failed
for ``STALE_READ_SECONDS`` uses its own view. While Redis is away each falls
back to its own view, and replicas together may overshoot by about one refresh
interval of spending.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from switchyard.router.contract import Budget
from switchyard.router.core.caller import Caller
from switchyard.router.errors import BudgetExceeded
from switchyard.router.metrics import Metrics
from switchyard.router.storage.base import Store
from switchyard.router.storage.records import UsageRecord, utcnow

if TYPE_CHECKING:
    # Loaded only with --redis-url: the Redis client is no small import.
    from switchyard.router.storage.shared_state import SharedState

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
    #: Held in the shared state too: its id there, and its windows' keys.
    shared_id: str = ""
    shared_keys: list[str] = field(default_factory=list)
    #: What the tightest budget had left after this hold (USD).
    headroom: Decimal = Decimal(0)


@dataclass(slots=True)
class _Pending:
    subjects: list[tuple[str, str]]
    cost: Decimal
    day: date
    month: date
    stored_at: float | None = None  # monotonic time the store committed it
    shared_id: str = ""
    shared_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Limit:
    """One of a budget's limits, converted once when the table is installed."""

    period: str  # day | month
    text: str  # as the table gives it
    usd: Decimal
    nanos: int  # for the shared state's scripts


@dataclass(frozen=True, slots=True)
class _Window:
    subject: tuple[str, str]
    start: date
    limit: _Limit

    @property
    def period(self) -> str:
        return self.limit.period


@dataclass(frozen=True, slots=True)
class Standing:
    """A budget's spend so far in its current window, against its limit."""

    api_key: str | None  # None: the organization's own budget
    period: str  # day | month
    start: date
    limit: Decimal
    spent: Decimal


#: How long an estimate is held for a request in flight, and a cost kept for a record
#: not yet committed, before the shared state lets them go (a replica that died).
HOLD_SECONDS = 600
#: A read of the database older than this is not combined with Redis's view (which
#: keeps what is open for HOLD_SECONDS only): the replica's own view is used instead.
STALE_READ_SECONDS = 30
#: A budget is close to its limit when fewer than this many estimates fit in what is left.
NEAR_LIMIT = 64
NANO = Decimal(1_000_000_000)


_ADJECTIVE = {"day": "daily", "month": "monthly"}


def _usd(d: Decimal) -> str:
    return format(d.quantize(Decimal("0.000001")).normalize(), "f")


class BudgetGuard:
    def __init__(
        self,
        store: Store,
        refresh_interval: float = 1.0,
        shared: SharedState | None = None,
        hold_seconds: float = HOLD_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.refresh_interval = refresh_interval
        self.shared = shared
        self.hold_us = int(hold_seconds * 1_000_000)
        self._limits: dict[tuple[str, str], Budget] = {}
        self._periods: dict[tuple[str, str], list[_Limit]] = {}
        self._db: dict[tuple[str, str, str, date], Decimal] = {}
        self._refreshed_at = float("-inf")
        #: Redis's clock when the last read of the database began (None: not known).
        self._read_at_us: int | None = None
        self._first_read = asyncio.Event()
        self._reserved: dict[tuple[str, str], Decimal] = {}
        self._pending: dict[str, _Pending] = {}
        #: The costs in ``_pending``, summed per (scope, subject, period, start).
        self._pending_sums: dict[tuple[str, str, str, date], Decimal] = {}
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count()

    def configure(self, budgets: list[Budget]) -> None:
        limits = {}
        for b in budgets:
            if b.api_key is None:
                limits[("organization", b.organization)] = b
            else:
                limits[("apiKey", f"{b.organization}/{b.api_key}")] = b
        if not limits.keys() <= self._limits.keys():
            self._first_read.clear()  # the new subjects' spend is not read yet
        self._limits = limits
        if self.metrics is not None:
            self.metrics.budget_used.clear()  # a budget no longer in the table goes
        self._periods = {
            subject: [
                _Limit(period, text, Decimal(text), _nanos(Decimal(text), ROUND_FLOOR))
                for period, text in (("day", b.daily_usd), ("month", b.monthly_usd))
                if text is not None
            ]
            for subject, b in limits.items()
        }

    def applies(self, caller: Caller) -> bool:
        """Whether any budget holds the caller: without one, a request reserves nothing
        and need not estimate its cost."""
        return bool(self._limits) and bool(self.subjects(caller))

    def subjects(self, caller: Caller) -> list[tuple[str, str]]:
        candidates = [
            ("organization", caller.organization),
            ("apiKey", f"{caller.organization}/{caller.key_name}"),
        ]
        return [s for s in candidates if s in self._limits]

    def spent(self, subject: tuple[str, str], period: str, start: date) -> Decimal:
        """This replica's own view: the database's last read, and what it has itself
        spent since and holds in flight."""
        window = (subject[0], subject[1], period, start)
        total = self._db.get(window, Decimal(0)) + self._pending_sums.get(window, Decimal(0))
        return total + self._reserved.get(subject, Decimal(0))

    def standing(self, organization: str, now: datetime | None = None) -> list[Standing]:
        """The organization's budgets and its keys', as this replica sees them now (the
        database's last read, with what it spent since and holds in flight)."""
        mine = [
            subject
            for subject in self._limits
            if subject == ("organization", organization)
            or (subject[0] == "apiKey" and subject[1].startswith(organization + "/"))
        ]
        return [
            Standing(
                None if w.subject[0] == "organization" else w.subject[1].split("/", 1)[1],
                w.period,
                w.start,
                w.limit.usd,
                self.spent(w.subject, w.period, w.start),
            )
            for w in self._windows(sorted(mine), now or utcnow())
        ]

    def _windows(self, subjects: list[tuple[str, str]], now: datetime) -> list[_Window]:
        starts = {"day": now.date(), "month": now.date().replace(day=1)}
        return [
            _Window(subject, starts[limit.period], limit)
            for subject in subjects
            for limit in self._periods[subject]
        ]

    async def reserve(
        self, caller: Caller, estimate: Decimal, now: datetime | None = None
    ) -> Reservation:
        """Hold ``estimate`` against every budget the caller is under, or refuse."""
        subjects = self.subjects(caller)
        if not subjects:
            return Reservation([], Decimal(0))
        if not self._first_read.is_set():
            await self._first_read.wait()  # a replica just started knows nothing yet
        windows = self._windows(subjects, now or utcnow())
        reservation = await self._hold_shared(subjects, windows, estimate)
        if reservation is None:  # no shared state: this replica's own view
            for w in windows:
                spent = self.spent(w.subject, w.period, w.start)
                left = w.limit.usd - spent
                if estimate > left or left <= 0:
                    raise _refusal(w, spent, estimate)
            reservation = Reservation(subjects, estimate)
        for subject in subjects:
            self._reserved[subject] = self._reserved.get(subject, Decimal(0)) + estimate
        return reservation

    async def _hold_shared(
        self, subjects: list[tuple[str, str]], windows: list[_Window], estimate: Decimal
    ) -> Reservation | None:
        """Hold the estimate in the shared state: None when it cannot say."""
        shared = self.shared
        read_at = self._read_at_us
        if shared is None or not shared.connected or read_at is None or not windows:
            return None
        if time.monotonic() - self._refreshed_at > STALE_READ_SECONDS:
            # The database has not been read for a while (it is away, or slow): Redis
            # keeps what is open for only so long, this replica's own view keeps all.
            return None
        keys: list[str] = []
        args: list[Any] = []
        nanos = _nanos(estimate, ROUND_CEILING)
        for w in windows:
            base = self._key(shared, w)
            keys += [base, f"{base}:exp"]
            db = self._db.get((w.subject[0], w.subject[1], w.period, w.start), Decimal(0))
            args += [w.limit.nanos, _nanos(db), read_at, nanos]
        hold_id = f"{shared.origin}-{next(self._ids)}"
        try:
            reply = await shared.run("hold", keys, [hold_id, self.hold_us, *args])
        except asyncio.CancelledError:
            shared.send("settle", keys, [hold_id, self.hold_us, 0])  # it may have run
            raise
        if reply is None:
            shared.send("settle", keys, [hold_id, self.hold_us, 0])  # it may have run
            return None
        held, index, amount = (int(x) for x in reply)
        if not held:
            raise _refusal(windows[index - 1], Decimal(amount) / NANO, estimate)
        return Reservation(subjects, estimate, hold_id, keys, Decimal(amount) / NANO)

    @staticmethod
    def _key(shared: SharedState, w: _Window) -> str:
        return f"{shared.prefix}:spend:{w.subject[0]}:{w.subject[1]}:{w.period}:{w.start}"

    def settle(self, reservation: Reservation, record: UsageRecord | None) -> None:
        """Release the reservation and count the real cost until the store has it."""
        for subject in reservation.subjects:
            self._reserved[subject] -= reservation.amount
            if not self._reserved[subject]:
                del self._reserved[subject]
        cost = record.total_cost if record is not None else Decimal(0)
        # Far from its limit, a budget loses nothing by holding the estimate until the
        # database has the record (one script less per request); close to it, the
        # difference could refuse someone, and the cost replaces the estimate at once.
        if (
            reservation.shared_keys
            and self.shared is not None
            and cost != reservation.amount
            and (
                not cost
                or cost > reservation.amount
                or reservation.headroom < NEAR_LIMIT * reservation.amount
            )
        ):
            self.shared.send(
                "settle",
                reservation.shared_keys,
                [reservation.shared_id, self.hold_us, _nanos(cost)],
            )
        if record is not None and reservation.subjects and cost:
            at = record.requested_at
            pending = self._pending[record.id] = _Pending(
                reservation.subjects,
                cost,
                at.date(),
                at.date().replace(day=1),
                shared_id=reservation.shared_id,
                shared_keys=reservation.shared_keys,
            )
            self._add_pending(pending, cost)

    def _add_pending(self, p: _Pending, amount: Decimal) -> None:
        sums = self._pending_sums
        for scope, subject in p.subjects:
            for window in ((scope, subject, "day", p.day), (scope, subject, "month", p.month)):
                total = sums.get(window, Decimal(0)) + amount
                if total:
                    sums[window] = total
                else:
                    del sums[window]

    def stored(self, records: list[UsageRecord], at: float) -> None:
        committed: dict[tuple[str, ...], list[Any]] = {}
        for r in records:
            p = self._pending.get(r.id)
            if p is not None and p.stored_at is None:
                p.stored_at = at
                if p.shared_keys:
                    committed.setdefault(tuple(p.shared_keys), []).extend(
                        (p.shared_id, _nanos(p.cost))
                    )
        if committed and self.shared is not None:
            for keys, args in committed.items():
                self.shared.send("commit", keys, args)

    async def refresh(self) -> None:
        """Read the database's spend counters."""
        if not self._limits:
            return
        started = time.monotonic()
        limits = self._limits
        # Redis's clock before the read: what is committed after it, the read may lack.
        read_at = await self.shared.time_us() if self.shared is not None else None
        now = utcnow()
        spend = await self.store.spend(list(limits), now.date(), now.date().replace(day=1))
        self._db = spend.totals
        self._read_at_us = read_at
        self._refreshed_at = started
        # What the store had committed before this read is now in the counters.
        for rid in [
            k for k, p in self._pending.items() if p.stored_at is not None and p.stored_at < started
        ]:
            pending = self._pending.pop(rid)
            self._add_pending(pending, -pending.cost)
        if limits is self._limits:  # else a subject added meanwhile is not read yet
            self._first_read.set()
            self._publish(now)

    def _publish(self, now: datetime) -> None:
        """Each budget's spend over its limit, as ``switchyard_budget_used_ratio``."""
        if self.metrics is None:
            return
        for w in self._windows(list(self._limits), now):
            organization, _, key = w.subject[1].partition("/")
            used = self.spent(w.subject, w.period, w.start) / w.limit.usd if w.limit.usd else 1
            self.metrics.budget_used.labels(organization, key, w.period).set(float(used))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("reading spend failed, keeping the last view: %s", exc)
                self._first_read.set()  # requests do not wait for a database that is away
            await asyncio.sleep(self.refresh_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _nanos(usd: Decimal, rounding: str = ROUND_CEILING) -> int:
    return int((usd * NANO).to_integral_value(rounding))


def _refusal(w: _Window, spent: Decimal, estimate: Decimal) -> OverBudget:
    left = w.limit.usd - spent
    who = "organization" if w.subject[0] == "organization" else "API key"
    return OverBudget(
        f"the {_ADJECTIVE[w.period]} budget of {who} {w.subject[1]!r} cannot "
        f"cover this request: {_usd(max(left, Decimal(0)))} USD left of "
        f"{w.limit.text}, and it could cost up to {_usd(estimate)} USD",
        {
            "scope": w.subject[0],
            "subject": w.subject[1],
            "period": w.period,
            "periodStart": w.start.isoformat(),
            "limitUsd": w.limit.text,
            "spentUsd": _usd(spent),
            "remainingUsd": _usd(max(left, Decimal(0))),
            "estimatedCostUsd": _usd(estimate),
        },
    )
