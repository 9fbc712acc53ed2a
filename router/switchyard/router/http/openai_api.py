"""OpenAI-compatible surface: ``POST /v1/chat/completions`` (the model list: ``models_api``).

The ``model`` is a model name from the table, or ``auto`` to let the router choose
(the task type then comes from the ``X-Switchyard-Task`` header). The shapes are in
``protocols.openai``.
"""

from __future__ import annotations

import time
from typing import Any

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.streaming import Streaming
from switchyard.router.http.completions import Call, endpoint, served_by, task_header
from switchyard.router.http.errors import Flavor
from switchyard.router.protocols import openai as wire
from switchyard.router.protocols.sse import StreamEncoder


def _id(info: RequestInfo) -> str:
    return f"chatcmpl-{info.id.replace('-', '')}"


class OpenAISurface:
    api = "openai"
    flavor: Flavor = "openai"

    async def to_request(self, body: wire.ChatBody, call: Call) -> ChatRequest:
        req = wire.to_chat_request(body, task_header(call.request))
        req.relay = "openai"  # an OpenAI-protocol provider's stream goes through as sent
        req.raw_messages = call.raw["messages"]  # and such a provider gets them as sent
        return req

    async def respond(
        self, body: wire.ChatBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = served_by(done.provider, done.model, done.cache_hit)
        headers["x-switchyard-cost-usd"] = format(done.cost.total.normalize(), "f")
        return wire.completion_json(done, _id(call.info), int(time.time())), headers

    def encoder(self, body: wire.ChatBody, streaming: Streaming, call: Call) -> StreamEncoder:
        return wire.ChunkEncoder(
            streaming,
            _id(call.info),
            int(time.time()),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            headers=served_by(streaming.provider, streaming.model, streaming.cache_hit),
        )

    async def finish(self, body: wire.ChatBody, encoder: StreamEncoder, call: Call) -> None:
        return None


chat_completions = endpoint(wire.ChatBody, OpenAISurface())
