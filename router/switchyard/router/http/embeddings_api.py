"""``POST /v1/embeddings``: OpenAI's embeddings API, to embedding models on OpenAI,
Azure, vLLM and Ollama providers, through the same selection, failover, budgets and
usage accounting as completions (shapes in ``protocols.embeddings``)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import RequestInfo
from switchyard.router.errors import SwitchyardError
from switchyard.router.http.completions import REQUEST_ID, Admission, served_by, task_header
from switchyard.router.http.services import services
from switchyard.router.protocols import embeddings as wire

API = "embeddings"


async def embeddings(request: Request) -> Response:
    s = services(request)
    info = RequestInfo(API, None)
    admission = Admission(API, s)
    try:
        _, caller, body, _ = await admission.admit(request, wire.EmbeddingsBody)
        req = wire.to_request(body, task_header(request))
    except SwitchyardError as exc:
        admission.refused(exc)
        raise
    try:
        result, done = await s.pipeline.embed(caller, req, info)
    finally:
        if admission.slot is not None:
            admission.slot.release()
    headers = served_by(done.provider, done.model, False)
    headers["x-switchyard-cost-usd"] = format(done.cost.total.normalize(), "f")
    return Response(
        orjson.dumps(wire.response_json(req, result, done.model)),
        media_type="application/json",
        headers=headers | {REQUEST_ID: info.id},
    )
