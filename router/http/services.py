"""What every handler reaches through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from switchyard.router.core.chat import Usage
from switchyard.router.core.cost import Cost
from switchyard.router.core.gateway import Gateway
from switchyard.router.metrics import Metrics

if TYPE_CHECKING:
    from switchyard.router.core.catalog import Route


@dataclass(slots=True)
class Services:
    gateway: Gateway
    metrics: Metrics
    ready: bool = False
    table_source: str = ""
    table_error: str | None = None
    table_loads: int = 0  # load attempts so far, good or bad
    started_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def record(
        self,
        api: str,
        route: Route,
        usage: Usage,
        cost: Cost,
        latency_ms: float,
        ttft_ms: float | None = None,
    ) -> None:
        m = self.metrics
        p, name = route.provider.name, route.model.name
        m.requests.labels(api, p, name, "ok").inc()
        m.latency.labels(p, name).observe(latency_ms / 1000)
        if ttft_ms is not None:
            m.ttft.labels(p, name).observe(ttft_ms / 1000)
        m.tokens.labels(p, name, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(p, name, "completion").inc(usage.completion_tokens)
        if cost.total:
            m.cost.labels(p, name).inc(float(cost.total))


def services(request: Request) -> Services:
    s: Services = request.app.state.services
    return s
