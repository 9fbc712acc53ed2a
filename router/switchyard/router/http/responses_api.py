"""OpenAI's Responses API: ``POST /v1/responses``, streaming included, and the kept
answers (``GET``/``DELETE /v1/responses/{id}``, ``GET …/input_items``). The shapes are
in ``protocols.responses``; the request takes the same path as every other surface's."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.streaming import Streaming
from switchyard.router.http.auth import authenticate
from switchyard.router.http.completions import Call, endpoint, served_by, task_header
from switchyard.router.http.errors import Flavor
from switchyard.router.http.services import services
from switchyard.router.protocols import responses as wire
from switchyard.router.protocols.sse import StreamEncoder


def _id(info: RequestInfo) -> str:
    return f"resp_{info.id.replace('-', '')}"


def _keeps(body: wire.ResponsesBody, call: Call) -> bool:
    return body.store is not False and call.catalog.settings.stored_response_days > 0


class ResponsesSurface:
    api = "responses"
    flavor: Flavor = "responses"

    async def to_request(self, body: wire.ResponsesBody, call: Call) -> ChatRequest:
        if body.previous_response_id is not None:
            kept = await services(call.request).responses.find(
                call.caller.organization,
                body.previous_response_id,
                field="previous_response_id",
            )
            wire.continue_from(body, kept.input_items + kept.response.get("output", []))
        return wire.to_chat_request(body, task_header(call.request))

    async def respond(
        self, body: wire.ResponsesBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = served_by(done.provider, done.model, done.cache_hit)
        answer = wire.response_json(body, done, _id(call.info), _keeps(body, call))
        await self._keep(body, answer, call)
        return answer, headers

    def encoder(self, body: wire.ResponsesBody, streaming: Streaming, call: Call) -> StreamEncoder:
        return wire.EventEncoder(
            body,
            streaming,
            _id(call.info),
            served_by(streaming.provider, streaming.model, streaming.cache_hit),
            _keeps(body, call),
        )

    async def finish(self, body: wire.ResponsesBody, encoder: StreamEncoder, call: Call) -> None:
        assert isinstance(encoder, wire.EventEncoder)
        await self._keep(body, encoder.obj, call)

    @staticmethod
    async def _keep(body: wire.ResponsesBody, answer: dict[str, Any], call: Call) -> None:
        if answer["store"]:
            await services(call.request).responses.keep(
                call.caller.organization,
                answer,
                wire.kept_items(wire.items_of(body)),
                call.catalog.settings.stored_response_days,
            )


responses = endpoint(wire.ResponsesBody, ResponsesSurface())


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def kept_response(request: Request) -> Response:
    """``GET``: a kept answer, as ``POST /v1/responses`` returned it; ``DELETE``: forget it."""
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "completion")
    response_id = request.path_params["response_id"]
    if request.method == "DELETE":
        await s.responses.forget(caller.organization, response_id)
        return _json({"id": response_id, "object": "response", "deleted": True})
    kept = await s.responses.find(caller.organization, response_id)
    return _json(kept.response)


async def input_items(request: Request) -> Response:
    """The items a kept answer's model was given, earlier turns included, in OpenAI's
    list shape (``order``: ``desc`` by default, as OpenAI lists them; ``limit`` 1..100;
    ``after`` an item id)."""
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "completion")
    kept = await s.responses.find(caller.organization, request.path_params["response_id"])
    page = wire.item_page(kept.input_items, dict(request.query_params))
    return _json(page)
