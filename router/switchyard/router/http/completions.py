"""The one request opening every completion surface shares.

Authenticate, read and validate the body, translate it, then either answer at once or
stream server-sent events; a request refused before serving began is counted here,
everything after by the pipeline. A surface (native, OpenAI, Anthropic) only says how
its protocol translates (see ``switchyard.router.protocols``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.contract import PROTOCOL_OF, untranslated
from switchyard.router.core.accounting import Completed, RequestInfo
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Catalog
from switchyard.router.core.chat import ChatRequest, Flush, Relayed
from switchyard.router.core.conversations import Keeping
from switchyard.router.core.inflight import Slot
from switchyard.router.core.selection import DROP_PARAMS_HEADER
from switchyard.router.core.streaming import Streaming
from switchyard.router.core.traced import request_attributes
from switchyard.router.errors import BadRequest, SwitchyardError, TooManyInFlight
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.errors import Flavor, error_body
from switchyard.router.http.event_stream import EventStream, Last
from switchyard.router.http.json_answer import JSONAnswer
from switchyard.router.http.services import Services, services
from switchyard.router.protocols.native import TASK_PATTERN
from switchyard.router.protocols.sse import StreamEncoder
from switchyard.router.tracing import TRACEPARENT, TRACESTATE, follow_client

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
#: The id of the request's usage record, to find it in usage data and logs.
REQUEST_ID = "x-switchyard-request-id"

_TASK = re.compile(TASK_PATTERN)

B = TypeVar("B", bound=BaseModel)
B_contra = TypeVar("B_contra", bound=BaseModel, contravariant=True)


@dataclass(slots=True)
class Call:
    """One request to a surface: what its methods may need beyond the body."""

    request: Request
    catalog: Catalog
    caller: Caller
    info: RequestInfo
    raw: Any  # the body as JSON data, before validation
    slot: Slot  # the request's in-flight slot: what it holds is released with it
    #: What the answer adds to a kept conversation (store, message threads).
    keeping: Keeping | None = None


class Surface(Protocol[B_contra]):
    """How one API's requests become neutral ones and its answers go back."""

    api: str  # what metrics and usage records call it
    flavor: Flavor  # the shape of its error bodies

    async def to_request(self, body: B_contra, call: Call) -> ChatRequest: ...

    async def respond(
        self, body: B_contra, done: Completed, call: Call
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON answer and its extra headers."""

    def encoder(self, body: B_contra, streaming: Streaming, call: Call) -> StreamEncoder:
        """How this stream's events are written."""

    async def finish(self, body: B_contra, encoder: StreamEncoder, call: Call) -> None:
        """Once the stream's last event is written, before it is sent."""


def _flag(request: Request, header: str) -> bool:
    return _choice(request, header) is True


def _choice(request: Request, header: str) -> bool | None:
    """A true/false header; None when absent."""
    value = request.headers.get(header)
    if value is None:
        return None
    if value == "false":
        return False
    if value == "true":
        return True
    raise BadRequest(f"{header}: 'true' or 'false', not {value!r}", field=header)


def task_header(request: Request) -> str | None:
    """The task type of the OpenAI and Anthropic surfaces, under the native API's rules."""
    value = request.headers.get("x-switchyard-task")
    if value is not None and not (0 < len(value) <= 64 and _TASK.match(value)):
        raise BadRequest(
            "X-Switchyard-Task: 1 to 64 letters, digits, '_', '.', ':' or '-'",
            field="X-Switchyard-Task",
        )
    return value


@dataclass(slots=True)
class Admission:
    """A generating request (a completion, embeddings) until serving begins: it holds an
    in-flight slot of its key, and a refusal before serving is counted here."""

    api: str
    services: Services
    info: RequestInfo
    organization: str = ""
    slot: Slot | None = None

    def follow(self, request: Request) -> None:
        """The client's trace context: the request's span under it, when this request is
        traced; else passed on to the provider as it came (``tracing``)."""
        headers = request.headers
        parent = headers.get(TRACEPARENT)
        tracing = self.services.tracing
        if tracing is not None:
            state = headers.get(TRACESTATE) if parent is not None else None
            trace = tracing.start(parent, state)
            if trace is not None:
                method, path = request.scope["method"], request.scope["path"]
                trace.name(f"{method} {path}", request_attributes(self.api, method, path, None))
            self.info.trace = trace
        elif parent is not None:
            follow_client(parent, headers.get(TRACESTATE))

    async def admit(self, request: Request, model: type[B]) -> tuple[Catalog, Caller, B, Any]:
        """Authenticate, take a slot, read and validate the body: the table, the caller,
        the body, and the body as JSON data."""
        s = self.services
        catalog = s.gateway.require_catalog()
        caller = authenticate(request, catalog, "completion")
        self.organization = caller.organization
        trace = self.info.trace
        if trace is not None:
            trace.capture = catalog.settings.tracing.capture_content
            trace.set({"switchyard.organization": caller.organization})
        self.slot = s.in_flight.acquire(caller, catalog.settings.max_in_flight_per_key)
        data = await read_json(request, catalog.settings.max_body_bytes)
        return catalog, caller, validate(model, data), data

    def refused(self, exc: SwitchyardError) -> None:
        s = self.services
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        elif isinstance(exc, TooManyInFlight):
            s.metrics.in_flight_refused.labels(self.organization).inc()
        s.accountant.refused(self.api, exc.status, self.organization)
        if self.info.trace is not None:
            self.info.trace.end(
                {"http.response.status_code": exc.status, "switchyard.failure.reason": exc.message},
                exc.code,
            )


def endpoint(model: type[B], surface: Surface[B]) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint serving ``surface``, whose bodies validate as ``model``."""

    async def serve(request: Request) -> Response:
        s = services(request)
        info = RequestInfo(surface.api, request.headers.get("cache-control"))
        admission = Admission(surface.api, s, info)
        admission.follow(request)
        try:
            catalog, caller, body, data = await admission.admit(request, model)
            assert admission.slot is not None
            call = Call(request, catalog, caller, info, data, admission.slot)
            req = await surface.to_request(body, call)
            req.drop_params = _flag(request, DROP_PARAMS_HEADER)
            req.continue_streams = _continue_streams(request, catalog)
            if info.trace is not None:
                info.trace.set(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": req.model,
                        "gen_ai.request.max_tokens": req.max_tokens,
                        "gen_ai.request.temperature": req.temperature,
                        "switchyard.task_type": req.task_type,
                        "switchyard.stream": req.stream,
                    }
                )
        except SwitchyardError as exc:
            admission.refused(exc)
            raise
        organization = caller.organization
        held = admission.slot
        assert held is not None  # admitted requests hold one
        slot: Slot | None = held
        try:
            if req.stream:
                streaming = await s.pipeline.stream(caller, req, info)
                encoder = surface.encoder(body, streaming, call)

                async def finish() -> None:
                    held.release()
                    await streaming.close()

                slot = None  # the stream holds it until its last byte
                headers = SSE_HEADERS | encoder.headers
                _add_clamped(headers, req, streaming.max_tokens)
                _add_dropped(headers, req, catalog, organization, streaming.provider)
                headers[REQUEST_ID] = info.id
                return EventStream(
                    _sse(
                        streaming,
                        encoder,
                        surface.flavor,
                        held,
                        lambda: surface.finish(body, encoder, call),
                    ),
                    headers,
                    finish,
                )
            done = await s.pipeline.complete(caller, req, info)
        finally:
            if slot is not None:
                slot.release()
        payload, headers = await surface.respond(body, done, call)
        _add_clamped(headers, req, done.max_tokens)
        _add_dropped(headers, req, catalog, organization, done.provider)
        headers[REQUEST_ID] = info.id
        return JSONAnswer(orjson.dumps(payload), headers)

    return serve


#: Set when the provider was asked for less output than the request: the model's
#: maxOutputTokens, or the context the prompt leaves (routing.clampMaxTokens).
MAX_TOKENS_HEADER = "x-switchyard-max-tokens"


def served_by(provider: str, model: str, cache_hit: bool) -> dict[str, str]:
    """Which provider and table model answered, and whether from the cache."""
    return {
        "x-switchyard-provider": provider,
        "x-switchyard-model": model,
        "x-switchyard-cache": "hit" if cache_hit else "miss",
    }


#: Whether a stream that breaks mid-way continues on another candidate (the table's
#: ``routing.continueStreams`` otherwise).
CONTINUE_HEADER = "x-switchyard-continue-streams"


def _continue_streams(request: Request, catalog: Catalog) -> bool | None:
    """The request's own choice of stream continuation, where the table lets it choose."""
    choice = _choice(request, CONTINUE_HEADER)
    settings = catalog.settings.continue_streams
    if choice and not settings.default and not settings.client_may_enable:
        raise BadRequest(
            f"{CONTINUE_HEADER}: this router's table does not let requests turn stream "
            "continuation on (routing.continueStreams)",
            field=CONTINUE_HEADER,
        )
    return choice


#: The fields the client asked to drop (X-Switchyard-Drop-Unsupported-Params) that the
#: provider which answered did not get: nothing is dropped without a word.
DROPPED_HEADER = "x-switchyard-dropped-params"


def _add_dropped(
    headers: dict[str, str],
    req: ChatRequest,
    catalog: Catalog,
    organization: str,
    provider_name: str,
) -> None:
    asked = req.asked()
    if not asked or not provider_name:
        return
    provider = catalog.org(organization).providers.get(provider_name)
    if provider is None:
        return
    dropped = untranslated(asked, req.params_protocol, PROTOCOL_OF[provider.provider_type])
    if not dropped:
        return
    # Field names are the client's JSON keys: only plain ones go into a header.
    named = [p for p in dropped if _PLAIN_NAME.match(p)]
    others = len(dropped) - len(named)
    headers[DROPPED_HEADER] = ", ".join([*named, *([f"{others} more"] if others else [])])


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _add_clamped(headers: dict[str, str], req: ChatRequest, used: int | None) -> None:
    if used is None or req.max_tokens is None or used >= req.max_tokens:
        return
    headers[MAX_TOKENS_HEADER] = f"{used}; requested={req.max_tokens}"


async def _sse(
    streaming: Streaming,
    encoder: StreamEncoder,
    flavor: Flavor,
    slot: Slot,
    finish: Callable[[], Awaitable[None]],
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes; its in-flight slot is free once the last is written. The
    last are ``Last``, which the stream's end goes out with."""
    try:
        head = encoder.open()
        if head:
            yield head
        # A provider's read at a time (``chat.Flush``): one write, not one per event. A
        # read relayed whole is one event, written as it comes, with no Flush after it;
        # one that ends the stream waits for the rest (nothing more is read for it).
        pending: list[bytes] = []
        try:
            async for event in streaming.events():
                if type(event) is Flush:
                    if pending:
                        yield b"".join(pending)
                        pending.clear()
                    continue
                out = encoder.event(event)
                if out:
                    if type(event) is Relayed and not pending and not event.last:
                        yield out
                    else:
                        pending.append(out)
        except SwitchyardError as exc:
            pending.append(encoder.error(error_body(exc, flavor)))
            yield Last(b"".join(pending))
            return
        pending.append(encoder.close())
        await finish()
        if last := b"".join(pending):
            yield Last(last)
    finally:
        slot.release()
