"""Liveness, readiness and metrics: no API key needed, nothing secret exposed."""

from __future__ import annotations

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.http.services import services


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
    return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)
