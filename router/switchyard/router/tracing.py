"""Traces: W3C trace context in and out, and OpenTelemetry spans exported over OTLP.

A request's ``traceparent`` is followed whether or not this router traces: untraced,
the client's headers go on to the provider as they came, so an agent's model calls
join the agent's own trace. Traced, the request is one server span and each call to a
provider one client span under it (the primary, each failover, each hedge, each
continuation), whose context the provider receives.

Which requests are traced is decided here, before any OpenTelemetry object exists:
a client's sampled flag is followed (the ``parentbased_*`` samplers' rule), and a
request without one is traced with the configured probability. An untraced request
costs a header lookup and one context variable; the SDK is imported only when tracing
is configured.

Attribute names are OpenTelemetry's GenAI semantic conventions (``gen_ai.*``), HTTP's
(``http.*``) and Switchyard's own (``switchyard.*``). What one span may hold is bounded:
attribute values are cut at ``SpanLimits.max_attribute_length``, and the export queue
drops spans beyond its size rather than growing.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("switchyard.router")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

#: The trace headers a provider call carries: the client's as they came (untraced), or
#: the call's own span (traced). Set for one request's task, and inherited by the
#: tasks it starts.
_outgoing: ContextVar[dict[str, str] | None] = ContextVar("switchyard_trace", default=None)

_PARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_MAX_TRACESTATE = 512  # W3C: 32 members; anything longer is not passed on

#: Attribute values longer than this are cut (prompts and answers, when captured).
MAX_ATTRIBUTE_LENGTH = 16 * 1024
#: Spans waiting for export; beyond it, new spans are dropped (and counted by the SDK).
MAX_QUEUE = 2048


def with_trace(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` for a provider call, with the trace headers of the current request."""
    extra = _outgoing.get()
    if extra is None:
        return headers
    return extra if headers is None else headers | extra


def follow_client(traceparent: str | None, tracestate: str | None) -> None:
    """An untraced request: the client's trace context goes on to the provider as it came."""
    if traceparent is not None and _PARENT.match(traceparent):
        headers = {TRACEPARENT: traceparent}
        if tracestate and len(tracestate) <= _MAX_TRACESTATE:
            headers[TRACESTATE] = tracestate
        _outgoing.set(headers)


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """Where spans go and how many requests make them."""

    endpoint: str  # the OTLP/HTTP traces URL: http://collector:4318/v1/traces
    sample_ratio: float = 1.0  # of requests that arrive without a sampled parent
    service_name: str = "switchyard-router"
    headers: Mapping[str, str] | None = None  # sent with every export (OTEL_EXPORTER_OTLP_HEADERS)

    @classmethod
    def from_env(
        cls, endpoint: str | None, sample_ratio: float | None, env: Mapping[str, str] = os.environ
    ) -> TraceConfig | None:
        """The configuration of ``--otlp-endpoint`` / ``--trace-sample`` and the standard
        ``OTEL_*`` variables (flags first); None when tracing is off."""
        if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return None
        if endpoint is None:
            if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
                return None
            endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            if endpoint is None and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        if not endpoint:
            return None
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"the OTLP endpoint must be an http(s) URL, got {endpoint!r}")
        if not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        ratio = sample_ratio if sample_ratio is not None else _env_ratio(env)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"the trace sample ratio must be within 0 and 1, got {ratio}")
        headers = _env_headers(
            env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
        )
        service = env.get("OTEL_SERVICE_NAME") or "switchyard-router"
        return cls(endpoint, ratio, service, headers)


def _env_ratio(env: Mapping[str, str]) -> float:
    """OTEL_TRACES_SAMPLER and its argument, as a ratio (every sampler follows a
    client's sampled flag; see the module's docstring)."""
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            raise ValueError(
                f"OTEL_TRACES_SAMPLER_ARG must be a number, got {env['OTEL_TRACES_SAMPLER_ARG']!r}"
            ) from None
    return 1.0


def _env_headers(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    headers = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            headers[key.strip()] = val.strip()
    return headers or None


class Tracing:
    """The router's tracer: decides which requests are traced, and makes their spans."""

    def __init__(self, config: TraceConfig) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.config = config
        self.ratio = config.sample_ratio
        limits = SpanLimits(max_attribute_length=MAX_ATTRIBUTE_LENGTH, max_events=16)
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            span_limits=limits,
        )
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers or {}))
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE, schedule_delay_millis=500)
        )
        self.tracer: Tracer = self.provider.get_tracer("switchyard.router")

    def start(self, traceparent: str | None, tracestate: str | None) -> RequestTrace | None:
        """A request's server span, when the request is traced (then named with
        ``RequestTrace.name``); else None, and the client's trace context, if any, is
        passed on as it came. Nothing is built for a request that is not traced."""
        parent = _PARENT.match(traceparent) if traceparent is not None else None
        if parent is not None and parent.group(1) != "ff" and int(parent.group(2), 16):
            sampled = bool(int(parent.group(4), 16) & 1)
        else:
            parent = None
            sampled = self.ratio >= 1.0 or random.random() < self.ratio
        if not sampled:
            follow_client(traceparent, tracestate)
            return None
        from opentelemetry import trace
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState

        context = None
        state = None
        if parent is not None:
            if tracestate and len(tracestate) <= _MAX_TRACESTATE:
                try:
                    state = TraceState.from_header([tracestate])
                except ValueError:
                    state = None
            remote = SpanContext(
                trace_id=int(parent.group(2), 16),
                span_id=int(parent.group(3), 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=state,
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self.tracer.start_span("request", context=context, kind=SpanKind.SERVER)
        return RequestTrace(self, span, tracestate if state is not None else None)

    def shutdown(self) -> None:
        """Export what is queued, then stop (a blocking call: on shutdown only)."""
        self.provider.shutdown()


class RequestTrace:
    """One traced request: its server span, and the provider calls under it."""

    __slots__ = (
        "_ended",
        "_held",
        "calls",
        "capture",
        "span",
        "trace_id",
        "tracestate",
        "tracing",
    )

    def __init__(self, tracing: Tracing, span: Span, tracestate: str | None) -> None:
        self.tracing = tracing
        self.span = span
        self.tracestate = tracestate
        self.trace_id = f"{span.get_span_context().trace_id:032x}"
        #: Prompts and answers may go on the spans (the table's tracing.captureContent).
        self.capture = False
        self._held: CallSpan | None = None
        self._ended = False
        self.calls = 0  # provider calls made so far, continuations included

    def set(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def name(self, name: str, attributes: Mapping[str, Any]) -> None:
        self.span.update_name(name)
        self.set(attributes)

    def call(self, name: str, attributes: Mapping[str, Any]) -> CallSpan:
        """A provider call's span, child of the request's."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        span = self.tracing.tracer.start_span(
            name,
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        return CallSpan(self, span)

    def hold(self, call: CallSpan) -> None:
        """The call that answered stays open until the request ends (a stream's last
        chunk); a call held before it (a stream that broke and was continued) ends."""
        if self._held is not None and self._held is not call:
            self._held.end({"switchyard.attempt.outcome": "broken"}, "stream_broken")
        self._held = call

    def end(
        self,
        attributes: Mapping[str, Any],
        error: str | None = None,
        held: Mapping[str, Any] | None = None,
        first_token_at: float | None = None,
    ) -> None:
        """End the request (once): the server span, and the held call with ``held``."""
        if self._ended:
            return
        self._ended = True
        if self._held is not None:
            self._held.end(held or {}, error, first_token_at)
            self._held = None
        if first_token_at is not None:
            self.span.add_event("gen_ai.first_token", timestamp=_ns(first_token_at))
        self.set(attributes)
        _finish(self.span, error)


class CallSpan:
    """One call to a provider; its context goes out with the call (``with_trace``)."""

    __slots__ = ("_ended", "headers", "request", "span")

    def __init__(self, request: RequestTrace, span: Span) -> None:
        self.request = request
        self.span = span
        ctx = span.get_span_context()
        self.headers = {TRACEPARENT: f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"}
        if request.tracestate:
            self.headers[TRACESTATE] = request.tracestate
        self._ended = False

    def activate(self) -> object:
        """Make this call's context the one provider calls carry, until ``reset``."""
        return _outgoing.set(self.headers)

    @staticmethod
    def reset(token: object) -> None:
        _outgoing.reset(token)  # type: ignore[arg-type]

    def end(
        self,
        attributes: Mapping[str, Any],
        error: str | None = None,
        first_token_at: float | None = None,
    ) -> None:
        if self._ended:
            return
        self._ended = True
        if first_token_at is not None:
            self.span.add_event("gen_ai.first_token", timestamp=_ns(first_token_at))
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        _finish(self.span, error)


def _finish(span: Span, error: str | None) -> None:
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


_PERF_TO_WALL = time.time_ns() - time.perf_counter_ns()


def _ns(perf: float) -> int:
    """A ``time.perf_counter()`` reading as the wall-clock nanoseconds spans use."""
    return _PERF_TO_WALL + int(perf * 1e9)
