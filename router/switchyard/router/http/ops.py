"""Liveness, readiness and metrics: no API key needed, and served on the admin port only.

``/metrics`` names every organization's providers and what each spent: whoever reaches
the API (every tenant, the internet) must not read it. So the router listens on two
ports (``--port`` and ``--admin-port``): the admin paths answer only on the admin port,
which the kubelet's probes and Prometheus reach, and every other path only on the API
port. Each port answers the other's paths with a 404.
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.errors import NotFound
from switchyard.router.http.errors import error_response
from switchyard.router.http.services import services
from switchyard.router.metrics import exposition

#: What the admin port serves.
ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class PortSplit:
    """ASGI middleware: the admin paths on ``admin_port`` only, the rest elsewhere only."""

    def __init__(self, app: Any, admin_port: int) -> None:
        self.app = app
        self.admin_port = admin_port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            server = scope.get("server") or (None, None)
            on_admin = server[1] == self.admin_port
            if (scope["path"] in ADMIN_PATHS) != on_admin:
                where = "the admin port" if not on_admin else "the API port"
                response = error_response(
                    NotFound(f"{scope['path']} is not served here: it is on {where}")
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.catalog
    if catalog is None:
        body: dict[str, object] = {
            "status": "not ready",
            "reason": s.table_error or "no routing table loaded",
        }
        return Response(orjson.dumps(body), status_code=503, media_type="application/json")
    body = {
        "status": "ready",
        "table": {
            "checksum": catalog.checksum,
            "source": s.table_source,
            "lastReloadError": s.table_error,
        },
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def metrics(request: Request) -> Response:
    s = services(request)
    for key, state in s.gateway.states.items():
        organization, provider = key.split("/", 1)
        s.metrics.breaker_state.labels(organization, provider).set(int(state.breaker.state))
    return Response(exposition(s.metrics), media_type=CONTENT_TYPE_LATEST)
