"""The routing table compiled for serving: per-organization indexes, pre-ranked lists.

Ranking that depends only on the table (task fit, priority, price, latency) is
done once here, so that selecting for a request is a short walk down a sorted
list that stops as soon as it has enough candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING

from switchyard.router.contract import (
    ApiKey,
    Model,
    Provider,
    RoutingSettings,
    RoutingTable,
    Template,
)
from switchyard.router.core.caller import Caller

if TYPE_CHECKING:
    from switchyard.router.core.adapter import Adapter
    from switchyard.router.core.breaker import CircuitBreaker
    from switchyard.router.core.health import ProviderState
    from switchyard.router.core.stall import RouteLatency


def provider_key(p: Provider) -> str:
    """organization/name: a provider's identity in state, adapters and metrics."""
    return f"{p.organization}/{p.name}"


@dataclass(slots=True, eq=False)
class Route:
    """One model on one provider, ready to serve."""

    model: Model
    provider: Provider
    key: str  # organization/provider/model: identifies the route in state and metrics
    input_price: Decimal  # USD per 1M tokens
    output_price: Decimal
    blended_price: Decimal
    best_for: frozenset[str]
    # Bound when the table is installed, so a request in flight keeps its
    # provider's state and connection pool even if a reload removes them.
    state: ProviderState = field(init=False)
    model_breaker: CircuitBreaker = field(init=False)  # this model's alone, on this provider
    latency: RouteLatency = field(init=False)  # this model's, on this provider
    adapter: Adapter = field(init=False)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def provider_key(self) -> str:
        return provider_key(self.provider)


@dataclass(slots=True)
class OrgCatalog:
    organization: str
    providers: dict[str, Provider] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)  # every enabled route, general order
    by_name: dict[str, list[Route]] = field(default_factory=dict)
    by_task: dict[str, list[Route]] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    all_models: list[Model] = field(default_factory=list)  # enabled or not, for listings


@dataclass(slots=True)
class Catalog:
    table: RoutingTable
    checksum: str
    orgs: dict[str, OrgCatalog]
    api_keys: dict[str, ApiKey]  # by SHA-256 hex
    settings: RoutingSettings
    #: Who each key is, made once with the table rather than on every request.
    callers: dict[str, Caller] = field(init=False)

    def __post_init__(self) -> None:
        self.callers = {
            sha: Caller(k.name, k.organization, frozenset(k.scopes))
            for sha, k in self.api_keys.items()
        }

    def org(self, organization: str) -> OrgCatalog:
        return self.orgs.get(organization) or OrgCatalog(organization)


def _rank_key(route: Route, settings: RoutingSettings, task: str | None) -> tuple[object, ...]:
    parts: list[object] = []
    for key in settings.rank_by:
        if key == "taskFit":
            parts.append(0 if task is not None and task in route.best_for else 1)
        elif key == "priority":
            parts.append((0 if route.provider.is_default else 1, route.provider.priority))
        elif key == "price":
            parts.append(route.blended_price)
        elif key == "latency":
            parts.append(
                route.model.avg_latency_ms if route.model.avg_latency_ms is not None else 1 << 30
            )
    # Deterministic for equal scores: names break ties.
    parts.append(route.provider.name)
    parts.append(route.model.name)
    return tuple(parts)


def compile_table(table: RoutingTable, checksum: str) -> Catalog:
    orgs: dict[str, OrgCatalog] = {}

    def org(name: str) -> OrgCatalog:
        if name not in orgs:
            orgs[name] = OrgCatalog(name)
        return orgs[name]

    for p in table.providers:
        org(p.organization).providers[p.name] = p
    settings = table.routing
    for m in table.models:
        oc = org(m.organization)
        oc.all_models.append(m)
        p = oc.providers[m.provider]
        if not (m.is_enabled and p.is_enabled) or p.health_status == "unhealthy":
            continue
        inp = Decimal(m.input_price_per_1m_tokens)
        out = Decimal(m.output_price_per_1m_tokens)
        oc.routes.append(
            Route(
                model=m,
                provider=p,
                key=f"{m.organization}/{p.name}/{m.name}",
                input_price=inp,
                output_price=out,
                # Prompts usually outweigh completions about three to one.
                blended_price=(inp * 3 + out) / 4,
                best_for=frozenset(m.best_for),
            )
        )
    for oc in orgs.values():
        oc.routes.sort(key=lambda r: _rank_key(r, settings, None))
        for r in oc.routes:
            oc.by_name.setdefault(r.model.name, []).append(r)
        tasks = {t for r in oc.routes for t in r.best_for}
        for task in sorted(tasks):
            oc.by_task[task] = sorted(
                oc.routes, key=partial(_rank_key, settings=settings, task=task)
            )
    for t in table.templates:
        org(t.organization).templates[t.name] = t
    return Catalog(
        table=table,
        checksum=checksum,
        orgs=orgs,
        api_keys={k.sha256: k for k in table.api_keys},
        settings=settings,
    )
