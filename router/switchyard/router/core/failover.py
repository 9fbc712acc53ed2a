"""The one failover loop: try the candidates in order until one answers.

A candidate that fails is judged (``verdicts``) and the next is tried; a request the
provider rightly refused stops the loop. A candidate that neither answers nor fails
within its stall deadline (``core.stall``) is not waited for: the next candidate is
asked too (a hedge; with ``stall.hedge`` off, the stalled call is given up), and the
first answer wins. The calls that lose are cancelled; one that had outlived its
deadline counts as a timeout against its provider's breaker, so a stalled provider is
taken out after a few requests rather than holding every request for the fixed
timeout.

A call with no deadline (a single candidate left, or a route too new to have one) is
awaited directly: the common path costs no task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from switchyard.router.contract import StallSettings
from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.live_stream import own_failure
from switchyard.router.core.selection import Plan
from switchyard.router.core.stall import LatencyWindow
from switchyard.router.core.verdicts import Verdicts
from switchyard.router.errors import (
    Attempt,
    NoCandidateAvailable,
    SwitchyardError,
    UpstreamError,
    UpstreamTimeout,
)
from switchyard.router.metrics import Metrics

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
    reserved: int
    started: float
    deadline: float | None  # seconds after ``started``
    stalled: bool = False


def _window(route: Route, kind: Kind) -> LatencyWindow:
    return route.latency.first_event if kind == "first_event" else route.latency.answer


def _cap(route: Route, kind: Kind) -> float:
    t = route.provider.timeouts
    return (t.first_token_ms if kind == "first_event" else t.total_ms) / 1000


def gap_deadline(route: Route, settings: StallSettings) -> float | None:
    """How long a stream that may be continued elsewhere can go without an event before
    it is taken for stalled: its route's deadline for a first event."""
    return _window(route, "first_event").deadline(settings, _cap(route, "first_event"))


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
    ) -> None:
        self.verdicts = verdicts
        self.metrics = metrics
        self.plan = plan
        self.req = req
        self.call = call
        self.kind = kind
        self.discard = discard  # frees an answer that arrived but lost the race
        self.settings = plan.catalog.settings.stall
        self.attempts: list[Attempt] = []
        self.started = time.perf_counter()
        self._next = 0
        self._pending: dict[asyncio.Future[T], _Try] = {}

    async def run(self) -> Answered[T]:
        try:
            while True:
                if not self._pending or self._newest_stalled():
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
                self._give_up_all()

    # -- launching ------------------------------------------------------------
    async def _launch(self) -> Answered[T] | None:
        """Start the next candidate that may be tried. Without a deadline and with no
        call in flight, it is awaited here and its answer returned."""
        routes = self.plan.routes
        while self._next < len(routes):
            route = routes[self._next]
            self._next += 1
            max_tokens = self.plan.max_tokens(self.req, route)
            reserved = self.plan.prompt_tokens + max_tokens
            if not await self.verdicts.claim(route, reserved, self.attempts):
                continue
            deadline = None
            if self._next < len(routes):
                deadline = _window(route, self.kind).deadline(self.settings, _cap(route, self.kind))
            started = time.perf_counter()
            if deadline is None and not self._pending:
                answered = await self._direct(route, max_tokens, reserved, started)
                if answered is not None:
                    return answered
                continue
            task = asyncio.ensure_future(self.call(route, max_tokens))
            self._pending[task] = _Try(route, reserved, started, deadline)
            return None
        return None

    async def _direct(
        self, route: Route, max_tokens: int, reserved: int, started: float
    ) -> Answered[T] | None:
        try:
            value = await self.call(route, max_tokens)
        except UpstreamError as exc:
            self._failed(route, exc, reserved)
            return None
        except BaseException as exc:
            # Cancelled (the client left), or the router's own failure: the provider
            # answered nothing that caused it, so no verdict on the provider.
            self.verdicts.abandoned(route, reserved)
            if isinstance(exc, Exception) and not isinstance(exc, SwitchyardError):
                raise own_failure(route, exc) from exc
            raise
        _window(route, self.kind).observe(time.perf_counter() - started)
        return Answered(route, value, reserved, self.attempts, self.started)

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
                self._drop(task, attempt)
                continue
            exc = task.exception()
            if exc is None:
                value = task.result()
                _window(attempt.route, self.kind).observe(time.perf_counter() - attempt.started)
                answered = Answered(
                    attempt.route, value, attempt.reserved, self.attempts, self.started
                )
            elif isinstance(exc, UpstreamError):
                self._failed(attempt.route, exc, attempt.reserved)
            else:
                self.verdicts.abandoned(attempt.route, attempt.reserved)
                if isinstance(exc, Exception) and not isinstance(exc, SwitchyardError):
                    raise own_failure(attempt.route, exc) from exc
                raise exc
        if answered is not None:
            self._give_up_all()
        return answered

    def _stalled(self, attempt: _Try) -> None:
        """The newest call outlived its deadline: hedge it, or give it up."""
        attempt.stalled = True
        route = attempt.route
        self.metrics.stalls.labels(route.provider.organization, route.provider.name).inc()
        if self.settings.hedge:
            return
        for task, t in list(self._pending.items()):
            if t is attempt:
                del self._pending[task]
                self._drop(task, t)

    # -- settling -----------------------------------------------------------------
    def _failed(self, route: Route, exc: UpstreamError, reserved: int) -> None:
        self.verdicts.failed(route, exc, self.attempts, reserved)
        if not exc.retryable:
            raise exc
        if self._next < len(self.plan.routes) or self._pending:
            self.metrics.failovers.labels(
                route.provider.organization, route.provider.name, exc.code
            ).inc()

    def _give_up_all(self) -> None:
        pending, self._pending = self._pending, {}
        for task, attempt in pending.items():
            self._drop(task, attempt)

    def _drop(self, task: asyncio.Future[T], attempt: _Try) -> None:
        """Cancel a call that lost; a stalled one is a timeout on its provider."""
        route = attempt.route
        if attempt.stalled:
            waited = time.perf_counter() - attempt.started
            window = _window(route, self.kind)
            self.verdicts.failed(
                route,
                UpstreamTimeout(
                    f"no answer within {waited:.2f}s (its recent p99 was "
                    f"{window.p99:.3f}s); another candidate was asked",
                    provider=route.provider.name,
                ),
                self.attempts,
                attempt.reserved,
            )
        else:
            self.verdicts.abandoned(route, attempt.reserved)
        if not task.done():
            task.cancel()
            task.add_done_callback(_retrieve)
        elif not task.cancelled() and task.exception() is None and self.discard is not None:
            freeing = asyncio.ensure_future(self.discard(task.result()))
            _freeing.add(freeing)
            freeing.add_done_callback(_freeing.discard)


#: Answers being freed after losing a race (a task must be referenced until it ends).
_freeing: set[asyncio.Future[None]] = set()


def _retrieve(task: asyncio.Future[T]) -> None:
    """A cancelled call may still end with its own error; it is of no interest."""
    if not task.cancelled():
        task.exception()
