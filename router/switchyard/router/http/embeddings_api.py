"""``POST /v1/embeddings``: OpenAI's embeddings API, to embedding models on OpenAI,
Azure, vLLM and Ollama providers, through the same selection, failover, budgets and
usage accounting as completions (shapes in ``protocols.embeddings``)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import RequestInfo
from switchyard.router.core.inflight import Slot
from switchyard.router.errors import SwitchyardError, TooManyInFlight
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.completions import REQUEST_ID, served_by, task_header
from switchyard.router.http.services import services
from switchyard.router.protocols import embeddings as wire

API = "embeddings"


async def embeddings(request: Request) -> Response:
    s = services(request)
    info = RequestInfo(API, None)
    organization = ""
    slot: Slot | None = None
    try:
        catalog = s.gateway.require_catalog()
        caller = authenticate(request, catalog, "completion")
        organization = caller.organization
        slot = s.in_flight.acquire(caller, catalog.settings.max_in_flight_per_key)
        body = validate(
            wire.EmbeddingsBody, await read_json(request, catalog.settings.max_body_bytes)
        )
        req = wire.to_request(body, task_header(request))
    except SwitchyardError as exc:
        if slot is not None:
            slot.release()
        elif isinstance(exc, TooManyInFlight):
            s.metrics.in_flight_refused.labels(organization).inc()
        s.accountant.refused(API, exc.status, organization)
        raise
    try:
        result, done = await s.pipeline.embed(caller, req, info)
    finally:
        slot.release()
    headers = served_by(done.provider, done.model, False)
    headers["x-switchyard-cost-usd"] = format(done.cost.total.normalize(), "f")
    return Response(
        orjson.dumps(wire.response_json(req, result, done.model)),
        media_type="application/json",
        headers=headers | {REQUEST_ID: info.id},
    )
