"""Anthropic-compatible surface: ``POST /v1/messages`` (shapes in ``protocols.anthropic``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.streaming import Streaming
from switchyard.router.errors import BadRequest
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.completions import Call, endpoint, task_header
from switchyard.router.http.errors import Flavor
from switchyard.router.http.services import services
from switchyard.router.protocols import anthropic as wire
from switchyard.router.protocols.sse import StreamEncoder


def _id(info: RequestInfo) -> str:
    return f"msg_{info.id.replace('-', '')}"


class AnthropicSurface:
    api = "anthropic"
    flavor: Flavor = "anthropic"

    async def to_request(self, body: wire.MessagesBody, call: Call) -> ChatRequest:
        if body.thread is not None and call.catalog.settings.stored_response_days == 0:
            raise BadRequest(
                "thread: this router holds no conversations (routing.storedResponseDays: 0)",
                field="thread",
            )
        if isinstance(body.thread, wire.ThreadContinue):
            kept = await services(call.request).responses.find(
                call.caller.organization,
                body.thread.previous_message_id,
                field="thread.previous_message_id",
            )
            call.raw["messages"] = wire.continue_thread(
                body, kept.input_items, kept.response.get("content", []), call.raw["messages"]
            )
        req = wire.to_chat_request(body, task_header(call.request))
        req.relay = "anthropic"  # an Anthropic provider's stream goes through as sent
        req.raw_messages = call.raw["messages"]  # and such a provider gets them as sent
        req.raw_system = call.raw.get("system")
        req.collect = body.thread is not None
        return req

    async def respond(
        self, body: wire.MessagesBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        answer = wire.message_json(done, _id(call.info))
        await _keep(body, answer["id"], answer["content"], call)
        return answer, {}

    def encoder(self, body: wire.MessagesBody, streaming: Streaming, call: Call) -> StreamEncoder:
        return wire.EventEncoder(streaming, _id(call.info))

    async def finish(self, body: wire.MessagesBody, encoder: StreamEncoder, call: Call) -> None:
        assert isinstance(encoder, wire.EventEncoder)
        result = encoder.streaming.result
        if result is not None:
            await _keep(body, encoder.message_id, wire.content_blocks(result), call)


async def _keep(
    body: wire.MessagesBody, message_id: str, content: list[dict[str, Any]], call: Call
) -> None:
    """Hold a thread's conversation under its answer's id, for the next turn to continue.
    The router holds it, whichever provider answered, so a thread survives failover."""
    if body.thread is None:
        return
    await services(call.request).responses.keep(
        call.caller.organization,
        {"id": message_id, "type": "message", "role": "assistant", "content": content},
        call.raw["messages"],
        call.catalog.settings.stored_response_days,
    )


messages = endpoint(wire.MessagesBody, AnthropicSurface())


async def count_tokens(request: Request) -> Response:
    """Counted by an Anthropic provider of the model, else estimated; the header
    ``x-switchyard-token-count`` says which."""
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    data = await read_json(request, catalog.settings.max_body_bytes)
    body = validate(wire.CountTokensBody, data)
    req = wire.to_chat_request(body, task_header(request))
    req.raw_messages, req.raw_system = data["messages"], data.get("system")
    req.count_only = True  # nothing is generated: every candidate may count
    counted = await s.gateway.count_tokens(caller, req)
    return Response(
        orjson.dumps({"input_tokens": counted.tokens}),
        media_type="application/json",
        headers={
            "x-switchyard-token-count": "exact" if counted.exact else "estimated",
            "x-switchyard-provider": counted.route.provider.name,
            "x-switchyard-model": counted.route.model.name,
        },
    )
