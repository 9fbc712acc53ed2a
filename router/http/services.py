"""What every handler reaches through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    # Metric children per (api, route): resolving labels costs more than the update.
    _children: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    def record(
        self,
        api: str,
        route: Route,
        usage: Usage,
        cost: Cost,
        latency_ms: float,
        ttft_ms: float | None = None,
    ) -> None:
        key = (api, route.key)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            p, name = route.provider.name, route.model.name
            children = self._children[key] = (
                m.requests.labels(api, p, name, "ok"),
                m.latency.labels(p, name),
                m.ttft.labels(p, name),
                m.tokens.labels(p, name, "prompt"),
                m.tokens.labels(p, name, "completion"),
                m.cost.labels(p, name),
            )
        requests, latency, ttft, prompt, completion, spend = children
        requests.inc()
        latency.observe(latency_ms / 1000)
        if ttft_ms is not None:
            ttft.observe(ttft_ms / 1000)
        prompt.inc(usage.prompt_tokens)
        completion.inc(usage.completion_tokens)
        if cost.total:
            spend.inc(float(cost.total))


def services(request: Request) -> Services:
    s: Services = request.app.state.services
    return s
