"""``POST /v1/embeddings``: OpenAI's embeddings API, to embedding models on OpenAI,
Azure, vLLM and Ollama providers, through the same selection, failover, budgets and
usage accounting as completions (shapes in ``protocols.embeddings``). An OpenAI-protocol
provider's answer is relayed as it arrives; the request holds its in-flight slot until
the last byte."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.accounting import RequestInfo
from switchyard.router.core.inflight import Slot
from switchyard.router.core.pipeline import Embedded
from switchyard.router.errors import ClientDisconnected, SwitchyardError
from switchyard.router.http.completions import REQUEST_ID, Admission, served_by, task_header
from switchyard.router.http.event_stream import EventStream
from switchyard.router.http.services import services
from switchyard.router.protocols import embeddings as wire

API = "embeddings"


async def embeddings(request: Request) -> Response:
    s = services(request)
    info = RequestInfo(API, None)
    admission = Admission(API, s, info)
    admission.follow(request)
    try:
        _, caller, body, _ = await admission.admit(request, wire.EmbeddingsBody)
        req = wire.to_request(body, task_header(request))
        req.relay = True  # an OpenAI-protocol provider's answer goes on as it arrives
    except SwitchyardError as exc:
        admission.refused(exc)
        raise
    slot = admission.slot
    assert slot is not None
    try:
        embedded = await s.pipeline.embed(caller, req, info)
    except BaseException:
        slot.release()
        raise
    done = embedded.done
    headers = served_by(done.provider, done.model, False) | {REQUEST_ID: info.id}
    if embedded.result.body is None:
        slot.release()
        headers["x-switchyard-cost-usd"] = format(done.cost.total.normalize(), "f")
        return Response(
            orjson.dumps(wire.response_json(req, embedded.result, done.model)),
            media_type="application/json",
            headers=headers,
        )
    return JSONStream(_relay(embedded, done.model), headers, _settle(embedded, slot))


class JSONStream(EventStream):
    """A JSON answer relayed as it arrives."""

    media_type = "application/json"


async def _relay(embedded: Embedded, model: str) -> AsyncGenerator[bytes, None]:
    body = embedded.result.body
    assert body is not None and embedded.finish is not None
    relay = wire.AnswerRelay(model)
    try:
        async for chunk in body:
            out = relay.feed(chunk)
            if out:
                yield out
    except SwitchyardError as exc:
        # The provider cut its answer after the client had part of it: nothing can be
        # added to a JSON body, so the client's connection is cut too (the error goes
        # up to the server), and the record says why.
        embedded.finish(relay.usage, exc)
        embedded.finish = None
        raise
    last = relay.close()
    embedded.finish(relay.usage, None)
    embedded.finish = None
    if last:
        yield last


def _settle(embedded: Embedded, slot: Slot) -> Callable[[], Awaitable[None]]:
    """Once the relay is over: its slot back, and, if it did not reach its end (the
    client left, the provider cut it), its record all the same."""

    async def settle() -> None:
        slot.release()
        body = embedded.result.body
        if isinstance(body, AsyncGenerator):
            await body.aclose()
        if embedded.finish is not None:
            embedded.finish(
                None, ClientDisconnected("the answer did not reach its end: the client left")
            )
            embedded.finish = None

    return settle
