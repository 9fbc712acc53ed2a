"""Anthropic-compatible surface: ``POST /v1/messages`` (shapes in ``protocols.anthropic``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.conversations import Keeping, json_size
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
        if body.thread is not None:
            await _thread(body, call)
        req = wire.to_chat_request(body, task_header(call.request))
        req.relay = "anthropic"  # an Anthropic provider's stream goes through as sent
        req.raw_messages = call.raw["messages"]  # and such a provider gets them as sent
        req.raw_system = call.raw.get("system")
        req.collect = body.thread is not None
        req.betas = wire.betas_of(call.request.headers.get("anthropic-beta"))
        return req

    async def respond(
        self, body: wire.MessagesBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        answer = wire.message_json(done, _id(call.info))
        await _keep(answer["id"], answer["content"], done.result.usage.total_tokens, call)
        return answer, {}

    def encoder(self, body: wire.MessagesBody, streaming: Streaming, call: Call) -> StreamEncoder:
        return wire.EventEncoder(streaming, _id(call.info))

    async def finish(self, body: wire.MessagesBody, encoder: StreamEncoder, call: Call) -> None:
        assert isinstance(encoder, wire.EventEncoder)
        result = encoder.streaming.result
        if result is not None:
            await _keep(
                encoder.message_id,
                wire.content_blocks(result),
                encoder.streaming.usage.total_tokens,
                call,
            )


_PREVIOUS = "thread.previous_message_id"


async def _thread(body: wire.MessagesBody, call: Call) -> None:
    """A message thread: a ``create`` is kept with its system prompt and tools; a
    ``continue`` gets the conversation and what the thread holds put before its turn."""
    settings = call.catalog.settings
    if settings.stored_response_days == 0:
        raise BadRequest(
            "thread: this router holds no conversations (routing.storedResponseDays: 0)",
            field="thread",
        )
    conversations = services(call.request).conversations
    limit = settings.max_stored_conversation_bytes
    own = call.raw["messages"]
    if isinstance(body.thread, wire.ThreadCreate):
        context = {
            name: call.raw[name] for name in wire.THREAD_FIELDS if call.raw.get(name) is not None
        }
        conversations.check_size(None, json_size(own) + json_size(context), limit, "messages")
        call.keeping = Keeping("thread", own, context=context or None)
        return
    assert isinstance(body.thread, wire.ThreadContinue)
    for name in wire.THREAD_FIELDS:
        if call.raw.get(name) is not None:
            raise BadRequest(
                f"{name}: a thread keeps the {name} it was created with; a continuing turn "
                "may not send it (start a new thread to change it)",
                field=name,
            )
    organization = call.caller.organization
    previous = await conversations.head(
        organization, "thread", body.thread.previous_message_id, _PREVIOUS
    )
    conversations.check_size(previous, json_size(own), limit, _PREVIOUS)
    call.keeping = Keeping("thread", own, previous=previous)
    lease = conversations.lease(call.caller.key, previous.conversation_bytes, limit)
    call.slot.also(lease.release)
    earlier = await conversations.read(organization, previous, _PREVIOUS)
    call.raw["messages"] = wire.continue_thread(
        body, earlier.items, earlier.answers, earlier.context, own
    )
    if earlier.context and "system" in earlier.context:
        call.raw["system"] = earlier.context["system"]


async def _keep(message_id: str, content: list[dict[str, Any]], tokens: int, call: Call) -> None:
    """Hold a thread's turn under its answer's id, for the next turn to continue. The
    router holds it, whichever provider answered, so a thread survives failover."""
    keeping = call.keeping
    if keeping is None:
        return
    await services(call.request).conversations.keep(
        call.caller.organization,
        "thread",
        {"id": message_id, "type": "message", "role": "assistant", "content": content},
        keeping.items,
        context=keeping.context,
        previous=keeping.previous,
        tokens=tokens,
        days=call.catalog.settings.stored_response_days,
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
    req.betas = wire.betas_of(request.headers.get("anthropic-beta"))
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
