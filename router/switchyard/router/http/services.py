"""What every handler reaches through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from switchyard.router.core.gateway import Gateway
from switchyard.router.core.pipeline import Pipeline
from switchyard.router.metrics import Metrics
from switchyard.router.storage.base import Store
from switchyard.router.table.kube import KubeClient


@dataclass(slots=True)
class Services:
    gateway: Gateway
    metrics: Metrics
    ready: bool = False
    table_source: str = ""
    table_error: str | None = None
    table_loads: int = 0  # load attempts so far, good or bad
    started_at: float = 0.0
    pipeline: Pipeline | None = None
    store: Store | None = None
    kube: KubeClient | None = None  # set when the router follows a cluster
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def serve(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline


def services(request: Request) -> Services:
    s: Services = request.app.state.services
    return s
