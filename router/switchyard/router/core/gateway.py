"""The serving core: the current table, its adapters, and the one failover loop.

``install`` swaps in a new table atomically (one assignment on the event loop);
requests already in flight keep the catalog they started with. Streams and plain
completions fail over through the same loop: a stream commits to a provider once
that provider has produced its first event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from switchyard.router.contract import Provider, ProviderNetworks, RoutingTable
from switchyard.router.core.adapter import Adapter, AdapterFactory, ProbeResult
from switchyard.router.core.balance import Balancer
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Catalog, Route, compile_table, provider_key
from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Message,
    StreamEvent,
    Usage,
    estimate_tokens,
)
from switchyard.router.core.cost import Cost, cost_of
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.core.failover import Answered, Failover, Kind, gap_deadline
from switchyard.router.core.health import ProviderStates
from switchyard.router.core.hedges import Hedges
from switchyard.router.core.live_stream import LiveStream, close_events
from switchyard.router.core.selection import Plan, plan, plan_embedding
from switchyard.router.core.verdicts import Verdicts
from switchyard.router.errors import (
    Attempt,
    NoCandidateAvailable,
    NotFound,
    UpstreamError,
    UpstreamProtocolError,
)
from switchyard.router.metrics import EndpointRow, Metrics
from switchyard.router.table import secrets
from switchyard.router.tracing import RequestTrace

log = logging.getLogger("switchyard.router")

_HEALTH_VALUE = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0, "unknown": -1.0}

T = TypeVar("T")


def _chat_usage(result: ChatResult) -> Usage:
    return result.usage


def _embed_usage(result: EmbeddingResult) -> Usage | None:
    """None for a relayed answer: its usage comes at its end."""
    return result.usage if result.body is None else None


async def _close_body(result: EmbeddingResult) -> None:
    """A relayed answer that lost its race: hang up on it."""
    if result.body is not None and isinstance(result.body, AsyncGenerator):
        await result.body.aclose()


def several_endpoints(route: Route) -> bool:
    """Whether the route's provider has more than one endpoint (``core.balance``): a
    call or a stream that one of them broke may go on at another."""
    balancer = route.adapter.balancer
    return balancer is not None and len(balancer) > 1


def _has_spare(route: Route) -> bool:
    balancer = route.adapter.balancer
    return balancer is not None and balancer.any_up()


@dataclass(slots=True)
class Served:
    """A finished completion and what it took."""

    result: ChatResult
    route: Route
    cost: Cost
    latency_ms: float
    attempts: list[Attempt]
    max_tokens: int  # the output cap the provider was asked for


@dataclass(slots=True, frozen=True)
class Counted:
    """A request's prompt tokens: counted by ``route``'s provider, or estimated."""

    tokens: int
    exact: bool
    route: Route


#: What makes two adapters interchangeable: how they reach the provider. Priority,
#: health and the like change often and must not recycle a connection pool.
WireIdentity = tuple[object, ...]


def wire_identity(p: Provider, key: str | None, networks: ProviderNetworks) -> WireIdentity:
    return (p.provider_type, p.url, p.api_version, key, p.timeouts, p.max_connections, networks)


class Gateway:
    def __init__(self, metrics: Metrics, make_adapter: AdapterFactory) -> None:
        self.metrics = metrics
        self.make_adapter = make_adapter
        self.catalog: Catalog | None = None
        self.keyring = secrets.KeyRing()
        self.states = ProviderStates()
        self.verdicts = Verdicts(metrics)
        self._adapters: dict[str, tuple[WireIdentity, Adapter]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[Adapter] = []
        metrics.endpoints.source = self._endpoint_rows

    # -- table --------------------------------------------------------------
    def install(self, table: RoutingTable, checksum: str) -> None:
        """Build everything for a new table, then swap it in with one assignment."""
        catalog = compile_table(table, checksum)
        adapters: dict[str, tuple[WireIdentity, Adapter]] = {}
        problems: dict[str, str | None] = {}
        refused: dict[str, str | None] = {}
        networks = table.routing.provider_networks
        for p in table.providers:
            key = provider_key(p)
            resolved = secrets.resolve(p.api_key, self.keyring)
            problems[key] = resolved.problem
            if resolved.problem:
                log.warning("provider %s is unusable: %s", key, resolved.problem)
            identity = wire_identity(p, resolved.value, networks)
            old = self._adapters.get(key)
            if old is not None and old[0] == identity:
                old[1].retarget(p)
                adapters[key] = old
            else:
                adapters[key] = (identity, self.make_adapter(p, resolved.value, networks))
            refused[key] = adapters[key][1].refused
            if refused[key]:
                log.warning("provider %s is unusable: %s", key, refused[key])
        retired = [a for k, (i, a) in self._adapters.items() if adapters.get(k, (None,))[0] != i]
        self.states.sync(catalog, problems, refused)
        for oc in catalog.orgs.values():
            for route in oc.routes:
                route.adapter = adapters[route.provider_key][1]
        for key, (_, adapter) in adapters.items():
            if adapter.balancer is not None:
                adapter.balancer.on_placed = partial(self._placed, key)
        self._adapters = adapters
        self.verdicts.max_retry_after = table.routing.max_retry_after_seconds
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

    # -- news from the other replicas ---------------------------------------
    def news(self, news: dict[str, Any]) -> None:
        """Another router replica's news (``storage.shared_state``, checked there):
        where it placed a conversation, or what its breaker saw."""
        placed = news.get("placed")
        if placed is None:
            self.verdicts.news(self.states, news)
            return
        entry = self._adapters.get(str(news["provider"]))
        balancer = entry[1].balancer if entry is not None else None
        slot = placed.get("slot")
        if balancer is not None and balancer.learn(
            int(placed["key"]), str(placed["address"]), None if slot is None else int(slot)
        ):
            organization, _, name = str(news["provider"]).partition("/")
            self.metrics.shared_state_placements_learnt.labels(organization, name).inc()

    def _placed(self, key: str, conversation: int, address: str, slot: int | None) -> None:
        """A conversation placed on one of provider ``key``'s endpoints (and llama.cpp
        slot): the other replicas hear of it, so that its next turn finds it through any
        of them."""
        shared = self.verdicts.shared
        if shared is not None:
            placed: dict[str, object] = {"key": conversation, "address": address}
            if slot is not None:
                placed["slot"] = slot
            shared.publish({"provider": key, "placed": placed})

    def endpoint_views(self, key: str) -> list[dict[str, object]]:
        """A provider's endpoints as they stand (empty when it has none)."""
        entry = self._adapters.get(key)
        balancer = entry[1].balancer if entry is not None else None
        return balancer.views() if balancer is not None else []

    def balancers(self) -> list[tuple[Provider, Balancer]]:
        """Every provider with endpoints, and their balancer: for the metrics."""
        return [
            (a.provider, a.balancer) for _, a in self._adapters.values() if a.balancer is not None
        ]

    def _endpoint_rows(self) -> list[EndpointRow]:
        now = time.monotonic()
        return [
            EndpointRow(
                p.organization,
                p.name,
                e.address,
                e.in_flight,
                e.running,
                e.waiting,
                e.kv_cache_usage,
                not e.available(now),
                e.picks,
                e.affinity_hits,
            )
            for p, balancer in self.balancers()
            for e in balancer.endpoints.values()
        ]

    def require_catalog(self) -> Catalog:
        if self.catalog is None:
            raise NoCandidateAvailable("no routing table is loaded")
        return self.catalog

    # -- serving ------------------------------------------------------------
    def plan(self, caller: Caller, req: ChatRequest) -> Plan:
        """Choose the candidates; raises when none fits."""
        return plan(self.require_catalog(), caller.organization, req, time.monotonic())

    async def complete(
        self,
        plan: Plan,
        req: ChatRequest,
        hedges: Hedges | None = None,
        trace: RequestTrace | None = None,
    ) -> Served:
        def call(route: Route, max_tokens: int) -> Awaitable[ChatResult]:
            return route.adapter.complete(req, route.model.model_name, max_tokens)

        answered = await self._failover(
            plan, req, call, hedges=hedges, usage=_chat_usage, trace=trace
        )
        result = answered.value
        self.verdicts.succeeded(answered.route, answered.reserved, result.usage.total_tokens)
        return Served(
            result=result,
            route=answered.route,
            cost=cost_of(answered.route, result.usage),
            latency_ms=(time.perf_counter() - answered.started) * 1000,
            attempts=answered.attempts,
            max_tokens=answered.reserved - plan.prompt_tokens,
        )

    async def open_stream(
        self,
        plan: Plan,
        req: ChatRequest,
        gap: bool = False,
        hedges: Hedges | None = None,
        trace: RequestTrace | None = None,
        continuing: bool = False,
    ) -> LiveStream:
        """Fail over until one candidate produces its first event; then commit to it.
        ``gap``: a stall mid-stream ends it (it may be continued elsewhere)."""

        async def first_event(
            route: Route, max_tokens: int
        ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
            events = route.adapter.stream(req, route.model.model_name, max_tokens)
            try:
                return events, await anext(events)
            except StopAsyncIteration:
                await close_events(events)
                raise UpstreamProtocolError("empty stream", provider=route.provider.name) from None
            except BaseException:
                await close_events(events)
                raise

        async def discard(value: tuple[AsyncIterator[StreamEvent], StreamEvent]) -> None:
            await close_events(value[0])

        answered = await self._failover(
            plan,
            req,
            first_event,
            "first_event",
            discard,
            hedges=hedges,
            trace=trace,
            continuing=continuing,
        )
        events, first = answered.value
        return LiveStream(
            self.verdicts,
            answered.route,
            events,
            first,
            started=answered.started,
            reserved=answered.reserved,
            prompt_tokens_estimate=plan.prompt_tokens,
            attempts=answered.attempts,
            gap=gap_deadline(answered.route, plan.catalog.settings.stall) if gap else None,
        )

    async def continue_stream(
        self,
        plan: Plan,
        req: ChatRequest,
        broken: Route,
        text: str,
        hedges: Hedges | None = None,
        trace: RequestTrace | None = None,
    ) -> LiveStream:
        """A stream that broke after ``text`` was sent, continued by the other candidates
        with that text as the beginning of their answer."""
        size = len(text.encode())
        asked = req.max_tokens
        more = replace(
            req,
            messages=[*req.messages, Message("assistant", text)],
            raw_messages=None,
            raw_system=None,
            relay=None,
            prefill=True,
            max_tokens=None if asked is None else max(1, asked - estimate_tokens(size)),
        )
        # The provider whose stream broke stays a candidate while another of its
        # endpoints is up (the one that broke is out: ``providers.base``).
        routes = [r for r in plan.routes if r is not broken or _has_spare(r)]
        if not routes:
            raise NoCandidateAvailable("no other candidate to continue the stream")
        rest = Plan(plan.catalog, routes, plan.prompt_tokens + estimate_tokens(size))
        return await self.open_stream(
            rest, more, gap=True, hedges=hedges, trace=trace, continuing=True
        )

    def plan_embedding(self, caller: Caller, req: EmbeddingRequest) -> Plan:
        return plan_embedding(self.require_catalog(), caller.organization, req, time.monotonic())

    async def embed(
        self,
        plan: Plan,
        req: EmbeddingRequest,
        hedges: Hedges | None = None,
        trace: RequestTrace | None = None,
    ) -> tuple[EmbeddingResult, Served]:
        """Embeddings by the first candidate that answers; ``Served`` for accounting."""

        def call(route: Route, _max_tokens: int) -> Awaitable[EmbeddingResult]:
            return route.adapter.embed(req, route.model.model_name)

        answered = await self._failover(
            plan, None, call, "answer", _close_body, hedges=hedges, usage=_embed_usage, trace=trace
        )
        result = answered.value
        # A relayed answer's usage is known at its end: until then, the estimate.
        used = plan.prompt_tokens if result.body is not None else result.usage.total_tokens
        self.verdicts.succeeded(answered.route, answered.reserved, used)
        served = Served(
            result=ChatResult("", "stop", result.usage, result.upstream_model),
            route=answered.route,
            cost=cost_of(answered.route, result.usage),
            latency_ms=(time.perf_counter() - answered.started) * 1000,
            attempts=answered.attempts,
            max_tokens=0,
        )
        return result, served

    def _failover(
        self,
        plan: Plan,
        req: ChatRequest | None,
        call: Callable[[Route, int], Awaitable[T]],
        kind: Kind = "answer",
        discard: Callable[[T], Awaitable[None]] | None = None,
        *,
        hedges: Hedges | None = None,
        usage: Callable[[T], Usage | None] | None = None,
        trace: RequestTrace | None = None,
        continuing: bool = False,
    ) -> Awaitable[Answered[T]]:
        return Failover(
            self.verdicts,
            self.metrics,
            plan,
            req,
            call,
            kind,
            discard,
            hedges=hedges,
            usage=usage,
            trace=trace,
            continuing=continuing,
        ).run()

    async def count_tokens(self, caller: Caller, req: ChatRequest) -> Counted:
        """Asked of the first candidate whose provider can count; else the estimate the
        router plans with (UTF-8 bytes / 3, on the high side). Nothing is spent, so no
        breaker or budget is touched."""
        plan = self.plan(caller, req)
        for route in plan.routes:
            try:
                tokens = await route.adapter.count_tokens(req, route.model.model_name)
            except UpstreamError as exc:
                log.info("provider %s could not count tokens: %s", route.provider_key, exc.detail)
                continue
            if tokens is not None:
                return Counted(tokens, exact=True, route=route)
        return Counted(plan.prompt_tokens, exact=False, route=plan.routes[0])

    # -- health -------------------------------------------------------------
    async def probe(self, organization: str, provider_name: str) -> ProbeResult:
        catalog = self.require_catalog()
        org = catalog.org(organization)
        provider = org.providers.get(provider_name)
        if provider is None:
            raise NotFound(f"provider {provider_name!r} does not exist", field="name")
        key = provider_key(provider)
        state = self.states.get(key)
        if state.key_problem or state.refused:
            problem = state.key_problem or f"refused: {state.refused}"
            result = ProbeResult(
                "unhealthy", None, time.time(), problem, refused=state.refused is not None
            )
        else:
            names = [m.model_name for m in org.all_models if m.provider == provider_name]
            result = await self._adapters[key][1].probe(names)
            if result.status != "unhealthy" and state.breaker.state:
                # It answers: an open breaker need not wait out its cool-down.
                state.breaker.record_success()
                self.metrics.breaker_state.labels(organization, provider_name).set(0)
        state.last_probe = result
        self.metrics.provider_healthy.labels(organization, provider_name).set(
            _HEALTH_VALUE[result.status]
        )
        return result
