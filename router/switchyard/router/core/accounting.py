"""Every completion the router answers is counted here, once: metrics, one usage record,
and the settling of its budget reservation.

Success, error, timeout, cache hit and a client that left alike: the pipeline and the
streams it hands out report each outcome through an ``Accountant``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from switchyard.router.core import traced
from switchyard.router.core.budgets import BudgetGuard, Reservation
from switchyard.router.core.caller import Caller
from switchyard.router.core.chat import ChatResult, Usage
from switchyard.router.core.cost import ZERO, Cost, cost_of
from switchyard.router.core.hedges import ESTIMATED, Loser
from switchyard.router.errors import Attempt, NoCandidateAvailable, SwitchyardError
from switchyard.router.metrics import Metrics
from switchyard.router.storage.recorder import UsageRecorder
from switchyard.router.storage.records import UsageRecord, new_id, utcnow
from switchyard.router.tracing import RequestTrace


@dataclass(slots=True)
class RequestInfo:
    """What accounting needs to know of a request beyond its body."""

    api: str  # native | openai | anthropic
    cache_control: str | None = None
    id: str = field(default_factory=new_id)  # the usage record's id, told to the client
    requested_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.perf_counter)
    trace: RequestTrace | None = None  # when the request is traced


@dataclass(slots=True)
class Completed:
    """A completion as it was served: from a provider or from the cache."""

    result: ChatResult
    model: str
    provider: str
    cost: Cost
    saved: Decimal
    latency_ms: float
    ttft_ms: float
    cache_hit: bool
    attempts: list[Attempt]
    #: The output cap the provider was asked for (None: from the cache).
    max_tokens: int | None = None
    #: A stream that broke and was continued on another candidate; its record says
    #: ``stream_continued`` as its error class, and counts every part's tokens and cost.
    continued: bool = False
    #: ``gen_ai.provider.name`` of the provider that answered ("": from the cache).
    gen_ai_provider: str = ""


#: Is ``name`` a model of ``organization``'s table? Only such names become labels.
KnownModel = Callable[[str, str], bool]


class Asked(Protocol):
    """What accounting reads of a request: a completion's or an embedding's."""

    @property
    def model(self) -> str | None: ...

    @property
    def task_type(self) -> str | None: ...


class Accountant:
    def __init__(
        self,
        metrics: Metrics,
        known_model: KnownModel,
        recorder: UsageRecorder | None = None,
        budgets: BudgetGuard | None = None,
    ) -> None:
        self.metrics = metrics
        self.known_model = known_model
        self.recorder = recorder
        self.budgets = budgets
        # Metric children per (api, organization, provider, model): resolving labels
        # costs more than the update itself.
        self._children: dict[tuple[str, str, str, str, str], tuple[Any, ...]] = {}

    def refused(self, api: str, status: int, organization: str = "") -> None:
        """A completion request turned away before serving began (auth, validation)."""
        self.metrics.requests.labels(api, organization, "", "", str(status)).inc()

    def served(
        self,
        caller: Caller,
        req: Asked,
        info: RequestInfo,
        done: Completed,
        reservation: Reservation | None,
        *,
        stream: bool = False,
    ) -> None:
        children = self._children_for(
            info.api, caller.organization, done.provider, done.model, done.gen_ai_provider
        )
        requests, latency, ttft, prompt, completion, spend, hits, gen_in, gen_out, gen_time = (
            children
        )
        requests.inc()
        latency.observe(done.latency_ms / 1000)
        if stream:
            ttft.observe(done.ttft_ms / 1000)
        usage = done.result.usage if not done.cache_hit else Usage()
        prompt.inc(usage.prompt_tokens)
        completion.inc(usage.completion_tokens)
        if done.cost.total:
            spend.inc(float(done.cost.total))
        if done.cache_hit:
            hits.inc()
        else:
            gen_in.observe(usage.prompt_tokens)
            if info.api != "embeddings":
                gen_out.observe(usage.completion_tokens)
            gen_time.observe(done.latency_ms / 1000)
        if info.trace is not None:
            traced.served(info.trace, req, done, caller.organization, caller.key_name, info.started)
        self._record(
            caller,
            req,
            info,
            provider=done.provider,
            model=done.model,
            usage=usage,
            cost=done.cost,
            saved=done.saved,
            latency_ms=done.latency_ms,
            ttft_ms=done.ttft_ms,
            status="ok",
            http_status=200,
            error="stream_continued" if done.continued else None,
            cache_hit=done.cache_hit,
            stream=stream,
            reservation=reservation,
        )

    def failed(
        self,
        caller: Caller,
        req: Asked,
        info: RequestInfo,
        exc: SwitchyardError,
        reservation: Reservation | None,
        *,
        provider: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        cost: Cost = ZERO,
        stream: bool = False,
    ) -> None:
        attempts = exc.attempts if isinstance(exc, NoCandidateAvailable) else []
        if provider is None and attempts:
            provider, model = attempts[-1].provider, attempts[-1].model
        provider = provider or getattr(exc, "provider", None)
        if (
            model is None
            and req.model is not None
            and self.known_model(caller.organization, req.model)
        ):
            model = req.model  # never a name the client made up: it would be stored and a label
        self.metrics.requests.labels(
            info.api, caller.organization, provider or "", model or "", str(exc.status)
        ).inc()
        latency = (time.perf_counter() - info.started) * 1000
        if info.trace is not None:
            traced.failed(
                info.trace,
                req,
                exc,
                caller.organization,
                caller.key_name,
                usage,
                float(cost.total),
            )
        self._record(
            caller,
            req,
            info,
            provider=provider,
            model=model,
            usage=usage or Usage(),
            cost=cost,
            saved=Decimal(0),
            latency_ms=latency,
            ttft_ms=None,
            status="error",
            http_status=exc.status,
            error=exc.code,
            cache_hit=False,
            stream=stream,
            reservation=reservation,
        )

    def lost(self, caller: Caller, req: Asked, info: RequestInfo, loser: Loser) -> None:
        """A call the request made that did not answer it (``core.hedges``): a usage
        record of its own, its cost in the metrics and budgets like any other."""
        route = loser.route
        org, provider, model = caller.organization, route.provider.name, route.model.name
        cost = cost_of(route, loser.usage)
        m = self.metrics
        m.hedged_calls.labels(org, provider, loser.outcome).inc()
        m.tokens.labels(org, provider, model, "prompt").inc(loser.usage.prompt_tokens)
        m.tokens.labels(org, provider, model, "completion").inc(loser.usage.completion_tokens)
        if cost.total:
            m.cost.labels(org, provider, model).inc(float(cost.total))
        self._record(
            caller,
            req,
            info,
            id=new_id(),
            provider=provider,
            model=model,
            usage=loser.usage,
            cost=cost,
            saved=Decimal(0),
            latency_ms=None,
            ttft_ms=None,
            status=loser.outcome,
            http_status=200 if loser.outcome == "hedged" else 499,
            error=ESTIMATED if loser.outcome == "cancelled" else None,
            cache_hit=False,
            stream=loser.stream,
            reservation=loser.hold,
        )

    def _children_for(
        self, api: str, org: str, provider: str, model: str, gen_ai_provider: str
    ) -> tuple[Any, ...]:
        key = (api, org, provider, model, gen_ai_provider)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            gen_ai = (org, "embeddings" if api == "embeddings" else "chat", gen_ai_provider, model)
            children = self._children[key] = (
                m.requests.labels(api, org, provider, model, "200"),
                m.latency.labels(org, provider, model),
                m.ttft.labels(org, provider, model),
                m.tokens.labels(org, provider, model, "prompt"),
                m.tokens.labels(org, provider, model, "completion"),
                m.cost.labels(org, provider, model),
                m.cache_hits.labels(org, provider, model),
                m.gen_ai_tokens.labels(*gen_ai, "input"),
                m.gen_ai_tokens.labels(*gen_ai, "output"),
                m.gen_ai_duration.labels(*gen_ai),
            )
        return children

    def _record(
        self,
        caller: Caller,
        req: Asked,
        info: RequestInfo,
        *,
        id: str | None = None,
        provider: str | None,
        model: str | None,
        usage: Usage,
        cost: Cost,
        saved: Decimal,
        latency_ms: float | None,
        ttft_ms: float | None,
        status: str,
        http_status: int,
        error: str | None,
        cache_hit: bool,
        stream: bool,
        reservation: Reservation | None,
    ) -> None:
        if self.recorder is None and (reservation is None or self.budgets is None):
            return  # usage is not recorded, and no estimate waits to be settled
        record = UsageRecord(
            id=id or info.id,
            organization=caller.organization,
            api_key=caller.key_name,
            api=info.api,
            provider=provider,
            model=model,
            task_type=req.task_type,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            input_cost=cost.input,
            output_cost=cost.output,
            saved_cost=saved,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            status=status,
            http_status=http_status,
            error_class=error,
            cache_hit=cache_hit,
            stream=stream,
            requested_at=info.requested_at,
            completed_at=utcnow(),
            # Only sampled requests have a trace (``Tracing.start``), so no record points
            # at a trace that was never made; a call that lost shares its request's.
            trace_id=None if info.trace is None else info.trace.trace_id,
        )
        if self.recorder is not None:
            self.recorder.submit(record)
        # The estimate held for this request gives way to what it really cost.
        if reservation is not None and self.budgets is not None:
            # Without a recorder no cost reaches the database's counters to wait for.
            self.budgets.settle(reservation, record if self.recorder is not None else None)
