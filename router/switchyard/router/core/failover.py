"""The one failover loop: try the candidates in order until one answers.

A candidate that fails is judged (``verdicts``) and the next is tried; a request the
provider rightly refused stops the loop. A candidate that neither answers nor fails
within its stall deadline (``core.stall``) is not waited for: the next candidate is
asked too (a hedge, once the request's budgets have taken its cost; with
``stall.hedge`` off, the stalled call is given up), and the first answer wins. A call
that had outlived its deadline and loses counts as a timeout against its provider's
breaker, so a stalled provider is taken out after a few requests rather than holding
every request for the fixed timeout.

Every call that loses is paid for (``core.hedges``): a plain call that loses is left to
finish, so that its record holds the tokens its provider reports; a stream that loses,
and any call given up, is cancelled and recorded with an estimate.

A call with no deadline (a single candidate left, or a route too new to have one) is
awaited directly: the common path costs no task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from switchyard.router.contract import StallSettings
from switchyard.router.core.budgets import Reservation
from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import ChatRequest, Usage
from switchyard.router.core.hedges import Hedges, Loser
from switchyard.router.core.live_stream import own_failure
from switchyard.router.core.selection import Plan
from switchyard.router.core.traced import call_failed, call_lost, call_span
from switchyard.router.core.verdicts import Verdicts
from switchyard.router.errors import (
    Attempt,
    NoCandidateAvailable,
    SwitchyardError,
    UpstreamError,
    UpstreamTimeout,
)
from switchyard.router.metrics import Metrics
from switchyard.router.tracing import CallSpan, RequestTrace

T = TypeVar("T")

#: What a call waits for: a stream's first event, or a plain call's whole answer.
Kind = Literal["first_event", "answer"]


@dataclass(slots=True)
class Answered(Generic[T]):
    """The candidate that answered, what it answered, and what it took to get there."""

    route: Route
    value: T
    reserved: int  # tokens claimed from its rate budget
    attempts: list[Attempt]  # the candidates that failed (or stalled) first
    started: float


@dataclass(slots=True, eq=False)
class _Try:
    route: Route
    reserved: int  # tokens claimed from its rate budget
    started: float
    deadline: float | None  # seconds after ``started``
    max_tokens: int
    stalled: bool = False
    #: What the request's budgets hold for this call: a hedge's own hold; None for the
    #: call the request's reservation covers.
    hold: Reservation | None = None
    span: CallSpan | None = None  # when the request is traced


def _cap(route: Route, kind: Kind) -> float:
    t = route.provider.timeouts
    return (t.first_token_ms if kind == "first_event" else t.total_ms) / 1000


def gap_deadline(route: Route, settings: StallSettings) -> float | None:
    """How long a stream that may be continued elsewhere can go without an event before
    it is taken for stalled: its route's deadline for a first event."""
    return route.latency.first_event.deadline(settings, _cap(route, "first_event"))


class Failover(Generic[T]):
    """One request's walk down its candidates."""

    def __init__(
        self,
        verdicts: Verdicts,
        metrics: Metrics,
        plan: Plan,
        req: ChatRequest | None,
        call: Callable[[Route, int], Awaitable[T]],
        kind: Kind,
        discard: Callable[[T], Awaitable[None]] | None = None,
        *,
        hedges: Hedges | None = None,
        usage: Callable[[T], Usage | None] | None = None,
        trace: RequestTrace | None = None,
        continuing: bool = False,
    ) -> None:
        self.verdicts = verdicts
        self.metrics = metrics
        self.plan = plan
        self.req = req
        self.call = call
        self.kind = kind
        self.discard = discard  # frees an answer that arrived but lost the race
        self.hedges = hedges  # pays for the calls that lose
        self.usage = usage  # what an answer used (None: it holds no output)
        self.settings = plan.catalog.settings.stall
        self.attempts: list[Attempt] = []
        self.started = time.perf_counter()
        self._next = 0
        self._pending: dict[asyncio.Future[T], _Try] = {}
        #: The request's budgets could not cover another call: no more hedges.
        self._no_hedge = False
        #: More than one call was made (a hedge), or one was given up: calls lose.
        self._raced = False
        self.trace = trace
        self.continuing = continuing  # the rest of a stream that broke
        self._calls = 0

    async def run(self) -> Answered[T]:
        try:
            while True:
                if not self._pending or (self._newest_stalled() and not self._no_hedge):
                    answered = await self._launch()
                    if answered is not None:
                        return answered
                if not self._pending:
                    raise NoCandidateAvailable(
                        "every candidate failed",
                        self.attempts,
                        retry_after=self.verdicts.ready_in(self.plan.routes),
                    )
                answered = await self._wait()
                if answered is not None:
                    return answered
        finally:
            if self._pending:
                self._give_up_all(finish=False)

    # -- launching ------------------------------------------------------------
    def _deadline(self, route: Route, max_tokens: int) -> float | None:
        latency, cap = route.latency, _cap(route, self.kind)
        if self.kind == "first_event":
            return latency.first_event.deadline(self.settings, cap)
        return latency.answer_deadline(self.settings, cap, max_tokens if self.req else None)

    async def _launch(self) -> Answered[T] | None:
        """Start the next candidate that may be tried. Without a deadline and with no
        call in flight, it is awaited here and its answer returned. With a call in
        flight it is a hedge: the request's budgets hold its cost first, or it is not
        sent."""
        routes = self.plan.routes
        while self._next < len(routes):
            route = routes[self._next]
            max_tokens = self.plan.max_tokens(self.req, route)
            hold = None
            if self._pending and self.hedges is not None:
                hold = await self.hedges.reserve(route, max_tokens)
                if hold is None:
                    self._no_hedge = True  # wait for the calls in flight instead
                    return None
            self._next += 1
            reserved = self.plan.prompt_tokens + max_tokens
            if not await self.verdicts.claim(route, reserved, self.attempts):
                if hold is not None and self.hedges is not None:
                    self.hedges.release(hold)
                continue
            deadline = None
            if self._next < len(routes):
                deadline = self._deadline(route, max_tokens)
            span = self._span(route, max_tokens)
            started = time.perf_counter()
            if deadline is None and not self._pending:
                answered = await self._direct(route, max_tokens, reserved, started, span)
                if answered is not None:
                    return answered
                continue
            self._raced = self._raced or bool(self._pending)
            if span is None:
                task = asyncio.ensure_future(self.call(route, max_tokens))
            else:
                token = span.activate()  # the task starts in the call's trace context
                task = asyncio.ensure_future(self.call(route, max_tokens))
                span.reset(token)
            self._pending[task] = _Try(
                route, reserved, started, deadline, max_tokens, hold=hold, span=span
            )
            return None
        return None

    def _span(self, route: Route, max_tokens: int) -> CallSpan | None:
        """The span of the call about to be made, when the request is traced."""
        if self.trace is None:
            return None
        if self._pending:
            kind = "hedge"
        elif self._calls == 0:
            kind = "continuation" if self.continuing else "primary"
        else:
            kind = "failover"
        self._calls += 1
        self.trace.calls += 1
        return call_span(self.trace, route, self.req, max_tokens, kind, self.trace.calls)

    async def _direct(
        self, route: Route, max_tokens: int, reserved: int, started: float, span: CallSpan | None
    ) -> Answered[T] | None:
        token = span.activate() if span is not None else None
        try:
            value = await self.call(route, max_tokens)
        except UpstreamError as exc:
            if span is not None:
                call_failed(span, exc)
            self._failed(route, exc, reserved)
            return None
        except BaseException as exc:
            # Cancelled (the client left), or the router's own failure: the provider
            # answered nothing that caused it, so no verdict on the provider.
            if span is not None:
                call_lost(span, "abandoned", None, f"{type(exc).__name__}: not finished")
            self.verdicts.abandoned(route, reserved)
            if isinstance(exc, Exception) and not isinstance(exc, SwitchyardError):
                raise own_failure(route, exc) from exc
            raise
        finally:
            if span is not None:
                span.reset(token)
        self._observe(route, started, value)
        if span is not None and self.trace is not None:
            self.trace.hold(span)
        return Answered(route, value, reserved, self.attempts, self.started)

    def _observe(self, route: Route, started: float, value: T) -> None:
        seconds = time.perf_counter() - started
        if self.kind == "first_event":
            route.latency.first_event.observe(seconds)
            return
        usage = self.usage(value) if self.usage is not None and self.req is not None else None
        route.latency.answered(seconds, usage.completion_tokens if usage is not None else None)

    # -- racing -----------------------------------------------------------------
    def _newest(self) -> _Try:
        return next(reversed(self._pending.values()))

    def _newest_stalled(self) -> bool:
        return self._newest().stalled

    async def _wait(self) -> Answered[T] | None:
        """Wait for a call to end, or for the newest call's deadline."""
        newest = self._newest()
        timeout = None
        if (
            newest.deadline is not None
            and not newest.stalled
            and self._next < len(self.plan.routes)
        ):
            timeout = max(0.0, newest.started + newest.deadline - time.perf_counter())
        done, _ = await asyncio.wait(
            self._pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self._stalled(newest)
            return None
        answered: Answered[T] | None = None
        for task in done:
            attempt = self._pending.pop(task)
            if answered is not None:
                self._drop(task, attempt, finish=True)
                continue
            exc = task.exception()
            if exc is None:
                value = task.result()
                self._observe(attempt.route, attempt.started, value)
                answered = Answered(
                    attempt.route, value, attempt.reserved, self.attempts, self.started
                )
                self._take_hold(attempt)
                if attempt.span is not None and self.trace is not None:
                    self.trace.hold(attempt.span)
            elif isinstance(exc, UpstreamError):
                self._release(attempt)
                if attempt.span is not None:
                    call_failed(attempt.span, exc)
                self._failed(attempt.route, exc, attempt.reserved)
            else:
                self._release(attempt)
                if attempt.span is not None:
                    call_lost(attempt.span, "abandoned", None, f"{type(exc).__name__}")
                self.verdicts.abandoned(attempt.route, attempt.reserved)
                if isinstance(exc, Exception) and not isinstance(exc, SwitchyardError):
                    raise own_failure(attempt.route, exc) from exc
                raise exc
        if answered is not None:
            self._give_up_all(finish=True)
        return answered

    def _take_hold(self, winner: _Try) -> None:
        """The request's own reservation is settled by its record: a winning hedge's
        hold goes to the call the reservation covered, if that one lost (it is paid
        for too), and back otherwise."""
        if winner.hold is None:
            return
        for other in self._pending.values():
            if other.hold is None:
                other.hold, winner.hold = winner.hold, None
                return
        self._release(winner)

    def _release(self, attempt: _Try) -> None:
        """A hedge that failed billed nothing: its hold goes back."""
        if attempt.hold is not None and self.hedges is not None:
            self.hedges.release(attempt.hold)
            attempt.hold = None

    def _stalled(self, attempt: _Try) -> None:
        """The newest call outlived its deadline: hedge it, or give it up."""
        attempt.stalled = True
        route = attempt.route
        self.metrics.stalls.labels(route.provider.organization, route.provider.name).inc()
        if self.settings.hedge:
            return
        self._raced = True
        for task, t in list(self._pending.items()):
            if t is attempt:
                del self._pending[task]
                self._drop(task, t, finish=False)

    # -- settling -----------------------------------------------------------------
    def _failed(self, route: Route, exc: UpstreamError, reserved: int) -> None:
        self.verdicts.failed(route, exc, self.attempts, reserved)
        if not exc.retryable:
            raise exc
        if self._next < len(self.plan.routes) or self._pending:
            self.metrics.failovers.labels(
                route.provider.organization, route.provider.name, exc.code
            ).inc()

    def _give_up_all(self, *, finish: bool) -> None:
        pending, self._pending = self._pending, {}
        for task, attempt in pending.items():
            self._drop(task, attempt, finish=finish)

    def _drop(self, task: asyncio.Future[T], attempt: _Try, *, finish: bool) -> None:
        """A call that lost: judged (a stalled one is a timeout on its provider), then
        paid for. ``finish``: a plain call may run on to its answer, so that its record
        holds what its provider reports; otherwise it is cancelled."""
        route = attempt.route
        if attempt.stalled:
            waited = time.perf_counter() - attempt.started
            self.verdicts.failed(
                route,
                UpstreamTimeout(
                    f"no answer within {waited:.2f}s (its recent deadline was "
                    f"{attempt.deadline or 0:.3f}s); another candidate was asked",
                    provider=route.provider.name,
                ),
                self.attempts,
                attempt.reserved,
            )
        else:
            self.verdicts.abandoned(route, attempt.reserved)
        if not task.done() and not (finish and self.kind == "answer" and self.hedges):
            task.cancel()
        done = task.done() and not task.cancelled() and task.exception() is None
        if done and self.discard is not None:
            freeing = asyncio.ensure_future(self.discard(task.result()))
            _freeing.add(freeing)
            freeing.add_done_callback(_freeing.discard)
        _losing.add(task)
        task.add_done_callback(_losing.discard)
        task.add_done_callback(lambda t: self._lost(t, attempt))

    def _lost(self, task: asyncio.Future[T], attempt: _Try) -> None:
        """Record a losing call once it ended: with its provider's usage when it
        answered a plain call, an estimate when it was given up (a stream that lost is
        closed before its end); nothing when it failed, which bills nothing. The one call
        of a request that raced nothing (its client left) is the request's own record's."""
        exc = None if task.cancelled() else task.exception()
        lost = self._raced and self.hedges is not None
        if not lost or isinstance(exc, UpstreamError | SwitchyardError):
            self._release(attempt)
            if attempt.span is not None:
                if isinstance(exc, SwitchyardError):
                    call_failed(attempt.span, exc)
                else:
                    call_lost(attempt.span, "abandoned", None, "the request ended first")
            return
        assert self.hedges is not None
        usage = None
        if not task.cancelled() and exc is None and self.kind == "answer" and self.usage:
            usage = self.usage(task.result())
        if usage is not None:
            loser = Loser(attempt.route, "hedged", usage, attempt.hold, stream=False)
        else:
            estimate = Usage(self.plan.prompt_tokens, 0)
            stream = self.kind == "first_event"
            loser = Loser(attempt.route, "cancelled", estimate, attempt.hold, stream=stream)
        if attempt.span is not None:
            why = "stalled past its deadline" if attempt.stalled else "another call answered first"
            call_lost(attempt.span, loser.outcome, loser.usage, why)
        self.hedges.lost(loser)


#: Answers being freed after losing a race, and calls that lost and run on to their
#: answer or their cancellation (a task must be referenced until it ends).
_freeing: set[asyncio.Future[None]] = set()
_losing: set[asyncio.Future[Any]] = set()
