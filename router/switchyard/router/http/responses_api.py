"""OpenAI's Responses API: ``POST /v1/responses``, streaming included. The shapes are in
``protocols.responses``; the request takes the same path as every other surface's."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Catalog
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.streaming import Streaming
from switchyard.router.http.completions import endpoint, served_by, task_header
from switchyard.router.http.errors import Flavor
from switchyard.router.protocols import responses as wire
from switchyard.router.protocols.sse import StreamEncoder


def _id(info: RequestInfo) -> str:
    return f"resp_{info.id.replace('-', '')}"


class ResponsesSurface:
    api = "responses"
    flavor: Flavor = "responses"

    def to_request(
        self, body: wire.ResponsesBody, request: Request, catalog: Catalog, caller: Caller
    ) -> ChatRequest:
        return wire.to_chat_request(body, task_header(request))

    def respond(
        self, body: wire.ResponsesBody, done: Completed, info: RequestInfo
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = served_by(done.provider, done.model, done.cache_hit)
        return wire.response_json(body, done, _id(info)), headers

    def encoder(
        self, body: wire.ResponsesBody, streaming: Streaming, info: RequestInfo
    ) -> StreamEncoder:
        return wire.EventEncoder(
            body,
            streaming,
            _id(info),
            served_by(streaming.provider, streaming.model, streaming.cache_hit),
        )


responses = endpoint(wire.ResponsesBody, ResponsesSurface())
