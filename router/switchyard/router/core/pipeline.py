"""One completion, start to end: cache → select → budget → call → account.

Every API surface goes through here, so every completion the router serves —
success, error, timeout, cache hit — is counted the same way and becomes one
usage record (through the ``Accountant``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from switchyard.router.core.accounting import Accountant, Completed, RequestInfo
from switchyard.router.core.budgets import BudgetGuard, Reservation
from switchyard.router.core.cache import Cached, ResponseCache, cache_key, policy
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import ChatRequest, Usage
from switchyard.router.core.cost import ZERO, cost_of
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.core.gateway import Gateway, Served, several_endpoints
from switchyard.router.core.hedges import Loser
from switchyard.router.core.live_stream import LiveStream
from switchyard.router.core.selection import Plan
from switchyard.router.core.streaming import Continuer, Streaming
from switchyard.router.core.traced import gen_ai_provider_name
from switchyard.router.errors import BudgetExceeded, SwitchyardError


@dataclass(slots=True)
class _Opening:
    """How a request begins: answered from the cache, or planned and paid for."""

    cached: Cached | None = None
    plan: Plan | None = None
    reservation: Reservation | None = None
    cache_as: str | None = None  # the key to keep the answer under


def _completed(served: Served) -> Completed:
    """A provider's answer as it was served (not from the cache)."""
    return Completed(
        served.result,
        served.route.model.name,
        served.route.provider.name,
        served.cost,
        Decimal(0),
        served.latency_ms,
        served.latency_ms,
        False,
        served.attempts,
        served.max_tokens,
        gen_ai_provider=gen_ai_provider_name(served.route.provider.provider_type),
    )


@dataclass(slots=True)
class Embedded:
    """An embeddings answer, and for a relayed one (``result.body``), how to account
    for it once it has passed: with the usage its provider reported (None: not said),
    or the error that ended it (the client left, the provider cut it)."""

    result: EmbeddingResult
    done: Completed
    finish: Callable[[Usage | None, SwitchyardError | None], None] | None = None


class _Hedges:
    """One request's ``core.hedges.Hedges``: its budgets hold each hedge's cost, and
    each call that lost is accounted for under the request's caller."""

    __slots__ = ("caller", "info", "pipeline", "plan", "req")

    def __init__(
        self,
        pipeline: Pipeline,
        caller: Caller,
        req: ChatRequest | EmbeddingRequest,
        info: RequestInfo,
        plan: Plan,
    ) -> None:
        self.pipeline = pipeline
        self.caller = caller
        self.req = req
        self.info = info
        self.plan = plan

    async def reserve(self, route: Route, max_tokens: int) -> Reservation | None:
        budgets = self.pipeline.budgets
        if budgets is None:
            return Reservation([], Decimal(0))
        chat = self.req if isinstance(self.req, ChatRequest) else None
        try:
            return await budgets.reserve(self.caller, self.plan.estimated_cost(chat, route))
        except BudgetExceeded:
            self.pipeline.accountant.metrics.hedges_refused.labels(self.caller.organization).inc()
            return None

    def release(self, hold: Reservation) -> None:
        if self.pipeline.budgets is not None:
            self.pipeline.budgets.settle(hold, None)

    def lost(self, loser: Loser) -> None:
        self.pipeline.accountant.lost(self.caller, self.req, self.info, loser)


class Pipeline:
    def __init__(
        self,
        gateway: Gateway,
        accountant: Accountant,
        cache: ResponseCache | None = None,
        budgets: BudgetGuard | None = None,
    ) -> None:
        self.gateway = gateway
        self.accountant = accountant
        self.cache = cache
        self.budgets = budgets

    async def complete(self, caller: Caller, req: ChatRequest, info: RequestInfo) -> Completed:
        opening = await self._open(caller, req, info)
        if opening.cached is not None:
            cached = opening.cached
            latency = (time.perf_counter() - info.started) * 1000
            done = Completed(
                cached.result,
                cached.model,
                cached.provider,
                ZERO,
                cached.cost,
                latency,
                latency,
                True,
                [],
            )
            self.accountant.served(caller, req, info, done, None)
            return done
        assert opening.plan is not None
        hedges = _Hedges(self, caller, req, info, opening.plan)
        try:
            served = await self.gateway.complete(opening.plan, req, hedges, info.trace)
        except SwitchyardError as exc:
            self.accountant.failed(caller, req, info, exc, opening.reservation)
            raise
        done = _completed(served)
        self.accountant.served(caller, req, info, done, opening.reservation)
        if opening.cache_as is not None and self.cache is not None:
            self.cache.put(
                opening.cache_as,
                caller.organization,
                served.result,
                done.model,
                done.provider,
                served.cost.total,
            )
        return done

    async def stream(self, caller: Caller, req: ChatRequest, info: RequestInfo) -> Streaming:
        opening = await self._open(caller, req, info)
        if opening.cached is not None:
            return Streaming.from_cache(self.accountant, caller, req, info, opening.cached)
        plan = opening.plan
        assert plan is not None
        continuing = req.continue_streams
        if continuing is None:
            continuing = plan.catalog.settings.continue_streams.default
        # Somewhere else to go on: another candidate, or another endpoint of one.
        continuing = continuing and (
            len(plan.routes) > 1 or any(several_endpoints(r) for r in plan.routes)
        )
        if opening.cache_as is not None or req.collect or continuing:
            req.relay = None  # the answer is kept, or may be continued: its text is read
        hedges = _Hedges(self, caller, req, info, plan)
        try:
            live = await self.gateway.open_stream(
                plan, req, gap=continuing, hedges=hedges, trace=info.trace
            )
        except SwitchyardError as exc:
            self.accountant.failed(caller, req, info, exc, opening.reservation)
            raise
        continuer: Continuer | None = None
        if continuing:

            def continuer(route: Route, text: str) -> Awaitable[LiveStream]:
                return self.gateway.continue_stream(plan, req, route, text, hedges, info.trace)

        return Streaming.from_provider(
            self.accountant,
            caller,
            req,
            info,
            live,
            reservation=opening.reservation,
            cache=self.cache if opening.cache_as is not None else None,
            cache_as=opening.cache_as,
            continuer=continuer,
        )

    async def embed(self, caller: Caller, req: EmbeddingRequest, info: RequestInfo) -> Embedded:
        """Embeddings: selection, budgets, failover and accounting as for completions
        (no cache: the answers are large, and cheap to make again). A relayed answer is
        accounted once it has passed (``Embedded.finish``)."""
        reservation = None
        try:
            plan = self.gateway.plan_embedding(caller, req)
            if info.trace is not None:
                info.trace.set({"switchyard.route.reason": plan.reason()})
            if self.budgets is not None:
                reservation = await self.budgets.reserve(caller, plan.estimated_cost(None))
            result, served = await self.gateway.embed(
                plan, req, _Hedges(self, caller, req, info, plan), info.trace
            )
        except SwitchyardError as exc:
            self.accountant.failed(caller, req, info, exc, reservation)
            raise
        done = _completed(served)
        if result.body is None:
            self.accountant.served(caller, req, info, done, reservation)
            return Embedded(result, done)
        route, estimate = served.route, Usage(plan.prompt_tokens, 0)

        def finish(usage: Usage | None, exc: SwitchyardError | None) -> None:
            # The provider made every vector before it sent the first byte: what it
            # reported, else the estimate, was spent however the relay ended.
            used = usage or estimate
            cost = cost_of(route, used)
            if exc is not None:
                self.accountant.failed(
                    caller,
                    req,
                    info,
                    exc,
                    reservation,
                    provider=route.provider.name,
                    model=route.model.name,
                    usage=used,
                    cost=cost,
                )
                return
            done.result.usage, done.cost = used, cost
            done.latency_ms = (time.perf_counter() - info.started) * 1000
            self.accountant.served(caller, req, info, done, reservation)

        return Embedded(result, done, finish)

    async def _open(self, caller: Caller, req: ChatRequest, info: RequestInfo) -> _Opening:
        """Answer from the cache if it may, else choose the candidates and reserve the cost."""
        key: str | None = None
        write = False
        if self.cache is not None:
            rules = policy(self.cache.settings, req, info.cache_control)
            if rules.read or rules.write:
                key = cache_key(caller.organization, req)
                write = rules.write
                if rules.read:
                    cached = await self.cache.get(key)
                    if cached is not None:
                        return _Opening(cached=cached)
        reservation = None
        try:
            plan = self.gateway.plan(caller, req)
            if info.trace is not None:
                info.trace.set({"switchyard.route.reason": plan.reason()})
            if self.budgets is not None and self.budgets.applies(caller):
                reservation = await self.budgets.reserve(caller, plan.estimated_cost(req))
        except SwitchyardError as exc:
            self.accountant.failed(caller, req, info, exc, reservation)
            raise
        return _Opening(plan=plan, reservation=reservation, cache_as=key if write else None)
