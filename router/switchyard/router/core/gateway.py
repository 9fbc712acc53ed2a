"""The serving core: the current table, the adapters, and the failover loop.

``install`` swaps in a new table atomically (one assignment on the event loop);
requests already in flight keep the catalog they started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from switchyard.router.contract import Provider, RoutingTable
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


#: What makes two adapters interchangeable: how they reach the provider. Priority,
#: health and the like change often and must not recycle a connection pool.
WireIdentity = tuple[object, ...]


def wire_identity(p: Provider, key: str | None) -> WireIdentity:
    return (p.provider_type, p.url, p.api_version, key, p.timeouts, p.max_connections)


def _unreadable(route: Route, exc: Exception) -> UpstreamProtocolError:
    log.warning("unreadable answer from %s", route.provider_key, exc_info=exc)
    return UpstreamProtocolError(
        f"unreadable answer ({type(exc).__name__})", provider=route.provider.name
    )


class Gateway:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.catalog: Catalog | None = None
        self.keyring = secrets.KeyRing()
        self.states = ProviderStates()
        self._adapters: dict[str, tuple[WireIdentity, Adapter]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[Adapter] = []

    # -- table --------------------------------------------------------------
    def install(self, table: RoutingTable, checksum: str) -> None:
        """Build everything for a new table, then swap it in with one assignment."""
        catalog = compile_table(table, checksum)
        adapters: dict[str, tuple[WireIdentity, Adapter]] = {}
        problems: dict[str, str | None] = {}
        for p in table.providers:
            key = f"{p.organization}/{p.name}"
            resolved = secrets.resolve(p.api_key, self.keyring)
            problems[key] = resolved.problem
            if resolved.problem:
                log.warning("provider %s is unusable: %s", key, resolved.problem)
            identity = wire_identity(p, resolved.value)
            old = self._adapters.get(key)
            if old is not None and old[0] == identity:
                old[1].provider = p
                adapters[key] = old
            else:
                adapters[key] = (identity, make_adapter(p, resolved.value))
        retired = [a for k, (i, a) in self._adapters.items() if adapters.get(k, (None,))[0] != i]
        self.states.sync(catalog, problems)
        for oc in catalog.orgs.values():
            for route in oc.routes:
                route.adapter = adapters[route.provider_key][1]
        self._adapters = adapters
        self.catalog = catalog
        self.metrics.table_info.set(len(table.models))
        for a in retired:
            self._retire(a)

    def _retire(self, adapter: Adapter) -> None:
        """Close a replaced adapter once no call on it can still be running."""
        self._retired.append(adapter)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def later() -> None:
            await asyncio.sleep(adapter.total_timeout + 1)
            await adapter.close()
            self._retired.remove(adapter)

        task = loop.create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for adapter in [a for _, a in self._adapters.values()] + self._retired:
            await adapter.close()

    def require_catalog(self) -> Catalog:
        if self.catalog is None:
            raise NoCandidateAvailable("no routing table is loaded")
        return self.catalog

    def adapter(self, provider_key: str) -> Adapter:
        return self._adapters[provider_key][1]

    # -- selection ----------------------------------------------------------
    def plan(self, caller: Caller, req: ChatRequest) -> Plan:
        """Choose the candidates; raises when none fits."""
        catalog = self.require_catalog()
        prompt_tokens = estimate_tokens(req.text_size())
        need = Need(
            model=req.model,
            task_type=req.task_type,
            prompt_tokens=prompt_tokens,
            max_tokens=req.max_tokens,
            stream=req.stream,
            tools=bool(req.tools) and req.tool_choice != "none",
            default_max_tokens=catalog.settings.default_max_tokens,
        )
        routes = select(
            catalog.org(caller.organization),
            need,
            time.monotonic(),
            catalog.settings.max_attempts,
        )
        return Plan(catalog, routes, prompt_tokens)

    def _claim(self, route: Route, tokens: int, attempts: list[Attempt]) -> bool:
        state = route.state
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
        """Count a provider's failure; a request the provider rightly refused is not one."""
        state = route.state
        if exc.retryable:
            cap = self.catalog.settings.max_retry_after_seconds if self.catalog else 60.0
            retry_after = min(exc.retry_after, cap) if exc.retry_after is not None else None
            state.breaker.record_failure(time.monotonic(), retry_after)
            self.metrics.breaker_state.labels(route.provider.name).set(int(state.breaker.state))
        else:
            state.breaker.release()
        self.metrics.upstream_errors.labels(route.provider.name, exc.code).inc()
        attempts.append(
            Attempt(route.provider.name, route.name, exc.code, exc.upstream_status, exc.message)
        )
        log.info("provider %s failed: %s", route.provider_key, exc.message)

    def _succeeded(self, route: Route) -> None:
        breaker = route.state.breaker
        if breaker.state:
            breaker.record_success()
            self.metrics.breaker_state.labels(route.provider.name).set(0)
        else:
            breaker.record_success()

    # -- serving ------------------------------------------------------------
    async def complete(self, plan: Plan, req: ChatRequest) -> Served:
        started = time.perf_counter()
        attempts: list[Attempt] = []
        for i, route in enumerate(plan.routes):
            max_tokens = effective_max_tokens(req, route, plan.catalog.settings.default_max_tokens)
            reserve = plan.prompt_tokens + max_tokens
            if not self._claim(route, reserve, attempts):
                continue
            state = route.state
            try:
                try:
                    result = await route.adapter.complete(req, route.model.model_name, max_tokens)
                except UpstreamError:
                    raise
                except Exception as exc:
                    raise _unreadable(route, exc) from exc
            except UpstreamError as exc:
                state.limiter.reconcile(reserve, 0)
                self._failed(route, exc, attempts)
                if not exc.retryable:
                    raise
                if i + 1 < len(plan.routes):
                    self.metrics.failovers.labels(route.provider.name, exc.code).inc()
                continue
            except BaseException:
                # Cancelled (the client left): no verdict on the provider.
                state.breaker.release()
                state.limiter.reconcile(reserve, 0)
                raise
            self._succeeded(route)
            state.limiter.reconcile(reserve, result.usage.total_tokens)
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
        attempts: list[Attempt] = []
        for i, route in enumerate(plan.routes):
            max_tokens = effective_max_tokens(req, route, plan.catalog.settings.default_max_tokens)
            reserve = plan.prompt_tokens + max_tokens
            if not self._claim(route, reserve, attempts):
                continue
            state = route.state
            events = route.adapter.stream(req, route.model.model_name, max_tokens)
            try:
                try:
                    first = await anext(events)
                except (UpstreamError, BaseException):
                    await _close(events)
                    raise
            except StopAsyncIteration:
                error: UpstreamError = UpstreamProtocolError(
                    "empty stream", provider=route.provider.name
                )
            except UpstreamError as exc:
                error = exc
            except Exception as exc:
                error = _unreadable(route, exc)
            except BaseException:
                state.breaker.release()
                state.limiter.reconcile(reserve, 0)
                raise
            else:
                return LiveStream(
                    self, route, events, first, started, reserve, plan.prompt_tokens, attempts
                )
            state.limiter.reconcile(reserve, 0)
            self._failed(route, error, attempts)
            if not error.retryable:
                raise error
            if i + 1 < len(plan.routes):
                self.metrics.failovers.labels(route.provider.name, error.code).inc()
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


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as exc:
            log.debug("closing an upstream stream failed: %s", exc)


class LiveStream:
    """A stream committed to one provider.

    Iterate ``events()`` once; call ``close()`` if it may not have been iterated
    to the end (a client that left). Either way the provider's breaker, budget
    and the stream's usage are settled exactly once.
    """

    def __init__(
        self,
        gateway: Gateway,
        route: Route,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
        started: float,
        reserve: int,
        prompt_tokens_estimate: int,
        attempts: list[Attempt],
    ) -> None:
        self.gateway = gateway
        self.route = route
        self._events = events
        self._first: StreamEvent | None = first
        self.started = started
        self.reserve = reserve
        self.prompt_tokens_estimate = prompt_tokens_estimate
        self.attempts = attempts
        self.ttft_ms = (time.perf_counter() - started) * 1000
        self.latency_ms = 0.0
        self.usage = Usage()
        self.cost: Cost | None = None
        self.finished = False  # the provider said it was done
        self._settled = False
        self._text_bytes = 0

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event; the last is ``Finish`` with real usage. Upstream errors propagate."""
        finish: Finish | None = None
        error: UpstreamError | None = None
        try:
            event = self._first
            self._first = None
            while event is not None:
                if type(event) is TextDelta:
                    self._text_bytes += len(event.text)
                elif type(event) is ToolCallDelta:
                    self._text_bytes += len(event.arguments)
                elif isinstance(event, Finish):
                    finish = event
                yield event
                if finish is not None:
                    break
                try:
                    event = await anext(self._events)
                except StopAsyncIteration:
                    break
                except UpstreamError:
                    raise
                except Exception as exc:
                    raise _unreadable(self.route, exc) from exc
        except UpstreamError as exc:
            error = exc
            raise
        finally:
            await self._settle(finish, error)

    async def close(self) -> None:
        """Settle a stream that was never iterated, or abandoned part way."""
        await self._settle(None, None)

    async def _settle(self, finish: Finish | None, error: UpstreamError | None) -> None:
        if self._settled:
            return
        self._settled = True
        await _close(self._events)
        self.latency_ms = (time.perf_counter() - self.started) * 1000
        usage = finish.usage if finish is not None else None
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            # The provider did not say; estimate rather than bill nothing.
            usage = Usage(self.prompt_tokens_estimate, estimate_tokens(self._text_bytes))
        self.usage = usage
        self.cost = cost_of(self.route, usage)
        route = self.route
        if finish is not None:
            self.finished = True
            self.gateway._succeeded(route)
        elif error is not None:
            self.gateway._failed(route, error, self.attempts)
        else:
            route.state.breaker.release()  # the client left: no verdict on the provider
        route.state.limiter.reconcile(self.reserve, usage.total_tokens)
