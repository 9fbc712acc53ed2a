"""The serving core: the current table, the adapters, and the failover loop.

``install`` swaps in a new table atomically (one assignment on the event loop);
requests already in flight keep the catalog they started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

from switchyard.router.core.catalog import Catalog, Route, compile_table
from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    estimate_tokens,
)
from switchyard.router.core.cost import Cost, cost_of
from switchyard.router.core.health import ProbeResult, ProviderStates
from switchyard.router.core.selection import Need, select
from switchyard.router.errors import (
    Attempt,
    NoCandidateAvailable,
    NotFound,
    UpstreamError,
    UpstreamProtocolError,
)
from switchyard.router.metrics import Metrics
from switchyard.router.providers.base import Adapter
from switchyard.router.providers.registry import make_adapter
from switchyard.router.table import secrets
from switchyard.router.table.schema import Provider, RoutingTable

log = logging.getLogger("switchyard.router")

_HEALTH_VALUE = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0, "unknown": -1.0}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: resolved from the bearer key."""

    key_name: str
    organization: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Plan:
    """The candidates for one request, in order, and its estimated prompt tokens."""

    catalog: Catalog
    routes: list[Route]
    prompt_tokens: int

    def estimated_cost(self, req: ChatRequest) -> Decimal:
        """The most the primary candidate could charge for this request, in USD."""
        route = self.routes[0]
        out = effective_max_tokens(req, route, self.catalog.settings.default_max_tokens)
        return (route.input_price * self.prompt_tokens + route.output_price * out) / _MILLION


_MILLION = Decimal(1_000_000)


@dataclass(slots=True)
class Served:
    """A finished completion and what it took."""

    result: ChatResult
    route: Route
    cost: Cost
    latency_ms: float
    attempts: list[Attempt]


def effective_max_tokens(req: ChatRequest, route: Route, default: int) -> int:
    if req.max_tokens is not None:
        return req.max_tokens
    return min(default, route.model.max_output_tokens)


class Gateway:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.catalog: Catalog | None = None
        self.states = ProviderStates()
        self._adapters: dict[str, tuple[tuple[Provider, str | None], Adapter]] = {}

    # -- table --------------------------------------------------------------
    def install(self, table: RoutingTable, checksum: str) -> None:
        """Build everything for a new table, then swap it in with one assignment."""
        catalog = compile_table(table, checksum)
        adapters: dict[str, tuple[tuple[Provider, str | None], Adapter]] = {}
        problems: dict[str, str | None] = {}
        retired: list[Adapter] = []
        for p in table.providers:
            key = f"{p.organization}/{p.name}"
            resolved = secrets.resolve(p.api_key)
            problems[key] = resolved.problem
            if resolved.problem:
                log.warning("provider %s is unusable: %s", key, resolved.problem)
            identity = (p, resolved.value)
            old = self._adapters.get(key)
            if old is not None and old[0] == identity:
                adapters[key] = old
            else:
                adapters[key] = (identity, make_adapter(p, resolved.value))
                if old is not None:
                    retired.append(old[1])
        retired += [a for k, (_, a) in self._adapters.items() if k not in adapters]
        self.states.sync(catalog, problems)
        self._adapters = adapters
        self.catalog = catalog
        self.metrics.table_info.set(len(table.models))
        for a in retired:
            self._close_later(a)

    def _close_later(self, adapter: Adapter) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # Let in-flight calls on the old session finish first.
        loop.call_later(60, lambda: loop.create_task(adapter.close()))

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.close()

    def require_catalog(self) -> Catalog:
        if self.catalog is None:
            raise NoCandidateAvailable("no routing table is loaded")
        return self.catalog

    def adapter(self, route_or_provider_key: str) -> Adapter:
        return self._adapters[route_or_provider_key][1]

    # -- selection ----------------------------------------------------------
    def plan(self, caller: Caller, req: ChatRequest) -> Plan:
        """Choose the candidates; raises when none fits."""
        return Plan(*self.candidates(caller, req))

    def candidates(self, caller: Caller, req: ChatRequest) -> tuple[Catalog, list[Route], int]:
        catalog = self.require_catalog()
        prompt_tokens = estimate_tokens(req.text_size())
        need = Need(
            model=req.model,
            task_type=req.task_type,
            prompt_tokens=prompt_tokens,
            max_tokens=req.max_tokens or 1,
            stream=req.stream,
            tools=bool(req.tools) and req.tool_choice != "none",
        )
        routes = select(
            catalog.org(caller.organization),
            need,
            self.states,
            time.monotonic(),
            catalog.settings.max_attempts,
        )
        return catalog, routes, prompt_tokens

    def _claim(self, route: Route, tokens: int, attempts: list[Attempt]) -> bool:
        state = self.states.get(route.provider_key)
        now = time.monotonic()
        if not state.breaker.try_acquire(now):
            attempts.append(
                Attempt(route.provider.name, route.name, "circuit_open", None, "breaker is open")
            )
            return False
        if not state.limiter.try_acquire(tokens, now):
            state.breaker.release()
            attempts.append(
                Attempt(route.provider.name, route.name, "rate_limited", None, "local budget spent")
            )
            return False
        return True

    def _failed(self, route: Route, exc: UpstreamError, attempts: list[Attempt]) -> None:
        state = self.states.get(route.provider_key)
        catalog = self.catalog
        cap = catalog.settings.max_retry_after_seconds if catalog else 60.0
        retry_after = min(exc.retry_after, cap) if exc.retry_after is not None else None
        state.breaker.record_failure(time.monotonic(), retry_after)
        self.metrics.breaker_state.labels(route.provider.name).set(int(state.breaker.state))
        self.metrics.upstream_errors.labels(route.provider.name, exc.code).inc()
        attempts.append(
            Attempt(route.provider.name, route.name, exc.code, exc.upstream_status, exc.message)
        )
        log.info("provider %s failed: %s", route.provider_key, exc.message)

    def _succeeded(self, route: Route) -> None:
        breaker = self.states.get(route.provider_key).breaker
        if breaker.state:
            breaker.record_success()
            self.metrics.breaker_state.labels(route.provider.name).set(0)
        else:
            breaker.record_success()

    # -- serving ------------------------------------------------------------
    async def complete(self, plan: Plan, req: ChatRequest) -> Served:
        started = time.perf_counter()
        catalog, routes, prompt_tokens = plan.catalog, plan.routes, plan.prompt_tokens
        attempts: list[Attempt] = []
        for i, route in enumerate(routes):
            max_tokens = effective_max_tokens(req, route, catalog.settings.default_max_tokens)
            reserve = prompt_tokens + max_tokens
            if not self._claim(route, reserve, attempts):
                continue
            adapter = self.adapter(route.provider_key)
            try:
                result = await adapter.complete(req, route.model.model_name, max_tokens)
            except UpstreamError as exc:
                self.states.get(route.provider_key).limiter.reconcile(reserve, 0)
                self._failed(route, exc, attempts)
                if not exc.retryable:
                    raise
                if i + 1 < len(routes):
                    self.metrics.failovers.labels(route.provider.name, exc.code).inc()
                continue
            self._succeeded(route)
            self.states.get(route.provider_key).limiter.reconcile(
                reserve, result.usage.total_tokens
            )
            return Served(
                result=result,
                route=route,
                cost=cost_of(route, result.usage),
                latency_ms=(time.perf_counter() - started) * 1000,
                attempts=attempts,
            )
        raise NoCandidateAvailable("every candidate failed", attempts)

    async def open_stream(self, plan: Plan, req: ChatRequest) -> LiveStream:
        """Fail over until one candidate produces its first event; then commit to it."""
        started = time.perf_counter()
        catalog, routes, prompt_tokens = plan.catalog, plan.routes, plan.prompt_tokens
        attempts: list[Attempt] = []
        for i, route in enumerate(routes):
            max_tokens = effective_max_tokens(req, route, catalog.settings.default_max_tokens)
            reserve = prompt_tokens + max_tokens
            if not self._claim(route, reserve, attempts):
                continue
            events = self.adapter(route.provider_key).stream(
                req, route.model.model_name, max_tokens
            )
            try:
                first = await anext(events)
            except (UpstreamError, StopAsyncIteration) as exc:
                await events.aclose()  # type: ignore[attr-defined]
                error = (
                    exc
                    if isinstance(exc, UpstreamError)
                    else UpstreamProtocolError("empty stream", provider=route.provider.name)
                )
                self.states.get(route.provider_key).limiter.reconcile(reserve, 0)
                self._failed(route, error, attempts)
                if not error.retryable:
                    raise error from None
                if i + 1 < len(routes):
                    self.metrics.failovers.labels(route.provider.name, error.code).inc()
                continue
            return LiveStream(self, route, events, first, started, reserve, prompt_tokens, attempts)
        raise NoCandidateAvailable("every candidate failed", attempts)

    # -- health -------------------------------------------------------------
    async def probe(self, organization: str, provider_name: str) -> ProbeResult:
        catalog = self.require_catalog()
        provider = catalog.org(organization).providers.get(provider_name)
        if provider is None:
            raise NotFound(f"provider {provider_name!r} does not exist", field="name")
        key = f"{organization}/{provider_name}"
        state = self.states.get(key)
        if state.key_problem:
            result = ProbeResult("unhealthy", None, time.time(), state.key_problem)
        else:
            model = next(
                (
                    m.model_name
                    for m in catalog.org(organization).all_models
                    if m.provider == provider_name
                ),
                None,
            )
            result = await self.adapter(key).probe(model)
        state.last_probe = result
        self.metrics.provider_healthy.labels(provider_name).set(_HEALTH_VALUE[result.status])
        return result


@dataclass(slots=True)
class LiveStream:
    """A stream committed to one provider; iterate ``events()`` once."""

    gateway: Gateway
    route: Route
    _events: AsyncIterator[StreamEvent]
    _first: StreamEvent
    started: float
    reserve: int
    prompt_tokens_estimate: int
    attempts: list[Attempt]
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost: Cost | None = None
    _text_bytes: int = 0

    def __post_init__(self) -> None:
        self.ttft_ms = (time.perf_counter() - self.started) * 1000

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event; the last is ``Finish`` with real usage. Upstream errors propagate."""
        gateway = self.gateway
        route = self.route
        finished: Finish | None = None
        try:
            event = self._first
            while True:
                if isinstance(event, TextDelta):
                    self._text_bytes += len(event.text)
                elif isinstance(event, ToolCallDelta):
                    self._text_bytes += len(event.arguments)
                elif isinstance(event, Finish):
                    finished = event
                yield event
                if finished is not None:
                    break
                event = await anext(self._events)
        except StopAsyncIteration:
            pass
        except UpstreamError as exc:
            gateway._failed(route, exc, self.attempts)
            raise
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]
            self.latency_ms = (time.perf_counter() - self.started) * 1000
        usage = finished.usage if finished is not None else None
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            # The provider did not say; estimate rather than bill nothing.
            usage = Usage(self.prompt_tokens_estimate, estimate_tokens(self._text_bytes))
        self.usage = usage
        self.cost = cost_of(route, usage)
        gateway._succeeded(route)
        gateway.states.get(route.provider_key).limiter.reconcile(self.reserve, usage.total_tokens)
