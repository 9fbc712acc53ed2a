"""Anthropic-compatible surface: ``POST /v1/messages`` (shapes in ``protocols.anthropic``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Catalog
from switchyard.router.core.chat import ChatRequest, estimate_tokens
from switchyard.router.core.streaming import Streaming
from switchyard.router.http.completions import endpoint, task_header
from switchyard.router.http.errors import Flavor
from switchyard.router.protocols import anthropic as wire
from switchyard.router.protocols.sse import StreamEncoder


def _id(info: RequestInfo) -> str:
    return f"msg_{info.id.replace('-', '')}"


class AnthropicSurface:
    api = "anthropic"
    flavor: Flavor = "anthropic"

    def to_request(
        self, body: wire.MessagesBody, request: Request, catalog: Catalog, caller: Caller
    ) -> ChatRequest:
        return wire.to_chat_request(body, task_header(request))

    def respond(
        self, body: wire.MessagesBody, done: Completed, info: RequestInfo
    ) -> tuple[dict[str, Any], dict[str, str]]:
        return wire.message_json(done, _id(info)), {}

    def encoder(
        self, body: wire.MessagesBody, streaming: Streaming, info: RequestInfo
    ) -> StreamEncoder:
        return wire.EventEncoder(streaming, _id(info), estimate_tokens(streaming.req.text_size()))


messages = endpoint(wire.MessagesBody, AnthropicSurface())
