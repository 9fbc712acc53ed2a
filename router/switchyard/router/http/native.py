"""``POST /api/v1/llm/completion``: the brief's API (see ``protocols.native``)."""

from __future__ import annotations

from typing import Any

from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.streaming import Streaming
from switchyard.router.core.templates import render
from switchyard.router.errors import NotFound
from switchyard.router.http.completions import Call, endpoint
from switchyard.router.http.errors import Flavor
from switchyard.router.protocols import native as wire
from switchyard.router.protocols.sse import StreamEncoder


def _request_id(info: RequestInfo) -> str:
    return f"cmpl-{info.id.replace('-', '')}"


class NativeSurface:
    api = "native"
    flavor: Flavor = "native"

    async def to_request(self, body: wire.CompletionBody, call: Call) -> ChatRequest:
        prompt = body.prompt
        if prompt is None:
            assert body.template is not None
            template = call.catalog.org(call.caller.organization).templates.get(body.template)
            if template is None:
                raise NotFound(f"template {body.template!r} does not exist", field="template")
            prompt = render(template, body.variables, body.model)
        return wire.to_chat_request(body, prompt)

    async def respond(
        self, body: wire.CompletionBody, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        return wire.completion_json(done, _request_id(call.info)), {}

    def encoder(self, body: wire.CompletionBody, streaming: Streaming, call: Call) -> StreamEncoder:
        return wire.EventEncoder(streaming, _request_id(call.info))

    async def finish(self, body: wire.CompletionBody, encoder: StreamEncoder, call: Call) -> None:
        return None


completion = endpoint(wire.CompletionBody, NativeSurface())
