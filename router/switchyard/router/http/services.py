"""What every handler reaches through its app (``services``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from switchyard.router.core.accounting import Accountant
from switchyard.router.core.conversations import Conversations
from switchyard.router.core.gateway import Gateway
from switchyard.router.core.inflight import InFlight
from switchyard.router.core.pipeline import Pipeline
from switchyard.router.metrics import Metrics
from switchyard.router.storage.base import Store
from switchyard.router.tracing import Tracing

if TYPE_CHECKING:
    from switchyard.router.kube.client import KubeClient


@dataclass(slots=True)
class Services:
    gateway: Gateway
    pipeline: Pipeline
    accountant: Accountant
    metrics: Metrics
    store: Store
    conversations: Conversations
    started_at: float
    table_source: str = ""
    table_error: str | None = None
    table_loads: int = 0  # load attempts so far, good or bad
    kube: KubeClient | None = None  # set when the router follows a cluster
    in_flight: InFlight = field(default_factory=InFlight)  # completions open, by API key
    tracing: Tracing | None = None  # --otlp-endpoint: spans of the requests sampled


def services(request: Request) -> Services:
    """The router's services: an attribute of its app (``app.RouterApp``), one lookup
    where Starlette's ``app.state`` is three."""
    s: Services = request.scope["app"].services
    return s
