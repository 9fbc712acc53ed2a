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
from switchyard.router.core.conversations import Keeping, json_size
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
        conversations = services(call.request).conversations
        organization = call.caller.organization
        limit = call.catalog.settings.max_stored_conversation_bytes
        previous = None
        if body.previous_response_id is not None:
            previous = await conversations.head(
                organization, "response", body.previous_response_id, _PREVIOUS
            )
        if _keeps(body, call):
            # This turn's own input, as it is kept: the conversation before it is not
            # stored again.
            items = wire.kept_items(wire.items_of(body))
            conversations.check_size(
                previous, json_size(items), limit, _PREVIOUS if previous else "input"
            )
            call.keeping = Keeping("response", items, previous=previous)
        if previous is not None:
            lease = conversations.lease(call.caller.key, previous.conversation_bytes, limit)
            call.slot.also(lease.release)
            earlier = await conversations.read(organization, previous, _PREVIOUS)
            wire.continue_from(body, wire.conversation_items(earlier.items, earlier.answers))
        return wire.to_chat_request(body, task_header(call.request))

    async def respond(
        self, body: wire.ResponsesBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = served_by(done.provider, done.model, done.cache_hit)
        answer = wire.response_json(body, done, _id(call.info), _keeps(body, call))
        if not await _keep(answer, done.result.usage.total_tokens, call):
            answer["store"] = False  # it says what became of it
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
        await _keep(encoder.obj, encoder.streaming.usage.total_tokens, call)


_PREVIOUS = "previous_response_id"


async def _keep(answer: dict[str, Any], tokens: int, call: Call) -> bool:
    """Keep the answer as its conversation's next turn; False when it is not kept."""
    keeping = call.keeping
    if keeping is None:
        return True
    return await services(call.request).conversations.keep(
        call.caller.organization,
        "response",
        answer,
        keeping.items,
        context=None,
        previous=keeping.previous,
        tokens=tokens,
        days=call.catalog.settings.stored_response_days,
    )


responses = endpoint(wire.ResponsesBody, ResponsesSurface())


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def kept_response(request: Request) -> Response:
    """``GET``: a kept answer, as ``POST /v1/responses`` returned it (its conversation is
    not read); ``DELETE``: forget it. Each holds one of the key's in-flight slots."""
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    response_id = request.path_params["response_id"]
    slot = s.in_flight.acquire(caller, catalog.settings.max_in_flight_per_key)
    try:
        if request.method == "DELETE":
            await s.conversations.forget(caller.organization, "response", response_id)
            return _json({"id": response_id, "object": "response", "deleted": True})
        answer = await s.conversations.answer(caller.organization, "response", response_id)
    finally:
        slot.release()
    return Response(answer, media_type="application/json")


async def input_items(request: Request) -> Response:
    """The items a kept answer's model was given, earlier turns included, in OpenAI's
    list shape (``order``: ``desc`` by default, as OpenAI lists them; ``limit`` 1..100;
    ``after`` an item id)."""
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    query = wire.item_query(dict(request.query_params))
    slot = s.in_flight.acquire(caller, catalog.settings.max_in_flight_per_key)
    try:
        head = await s.conversations.head(
            caller.organization, "response", request.path_params["response_id"]
        )
        lease = s.conversations.lease(
            caller.key, head.conversation_bytes, catalog.settings.max_stored_conversation_bytes
        )
        slot.also(lease.release)
        earlier = await s.conversations.read(caller.organization, head)
        items = wire.conversation_items(earlier.items, earlier.answers[:-1])
        del earlier
        page = wire.item_page(items, query)
    finally:
        slot.release()
    return _json(page)
