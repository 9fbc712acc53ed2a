"""One completion, start to end: cache → select → budget → call → account → metrics.

Every API surface goes through here, so every completion the router serves —
success, error, timeout, cache hit — is counted the same way and becomes one
usage record.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from switchyard.router.contract import CacheSettings
from switchyard.router.core.budgets import BudgetGuard, Reservation
from switchyard.router.core.cache import CachePolicy, ResponseCache, cache_key, policy
from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.core.cost import ZERO, Cost
from switchyard.router.core.gateway import Caller, Gateway, LiveStream
from switchyard.router.errors import (
    Attempt,
    ClientDisconnected,
    NoCandidateAvailable,
    SwitchyardError,
)
from switchyard.router.metrics import Metrics
from switchyard.router.storage.recorder import UsageRecorder
from switchyard.router.storage.records import UsageRecord, new_id, utcnow


@dataclass(slots=True)
class RequestInfo:
    api: str  # native | openai | anthropic
    cache_control: str | None = None
    id: str = field(default_factory=new_id)  # the usage record's id, told to the client
    requested_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class Completed:
    result: ChatResult
    model: str
    provider: str
    cost: Cost
    saved: Decimal
    latency_ms: float
    ttft_ms: float
    cache_hit: bool
    attempts: list[Attempt]


class Pipeline:
    def __init__(
        self,
        gateway: Gateway,
        metrics: Metrics,
        recorder: UsageRecorder | None = None,
        cache: ResponseCache | None = None,
        budgets: BudgetGuard | None = None,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.recorder = recorder
        self.cache = cache
        self.budgets = budgets
        # Metric children per (api, provider, model): resolving labels costs more
        # than the update itself.
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    # -- the two ways to serve ------------------------------------------------
    async def complete(self, caller: Caller, req: ChatRequest, info: RequestInfo) -> Completed:
        key, rules = self._cache_rules(caller, req, info)
        if key is not None and rules.read and self.cache is not None:
            cached = await self.cache.get(key)
            if cached is not None:
                latency = (time.perf_counter() - info.started) * 1000
                done = Completed(
                    cached.result,
                    cached.model,
                    cached.provider,
                    ZERO,
                    cached.cost,
                    latency,
                    latency,
                    True,
                    [],
                )
                self._account(caller, req, info, done, None)
                return done
        reservation = None
        try:
            plan = self.gateway.plan(caller, req)
            reservation = self._reserve(caller, plan.estimated_cost(req))
            served = await self.gateway.complete(plan, req)
        except SwitchyardError as exc:
            self._failed(caller, req, info, exc, reservation)
            raise
        done = Completed(
            served.result,
            served.route.model.name,
            served.route.provider.name,
            served.cost,
            Decimal(0),
            served.latency_ms,
            served.latency_ms,
            False,
            served.attempts,
        )
        self._account(caller, req, info, done, reservation)
        if key is not None and rules.write and self.cache is not None:
            self.cache.put(
                key,
                caller.organization,
                served.result,
                done.model,
                done.provider,
                served.cost.total,
            )
        return done

    async def stream(self, caller: Caller, req: ChatRequest, info: RequestInfo) -> Streaming:
        key, rules = self._cache_rules(caller, req, info)
        if key is not None and rules.read and self.cache is not None:
            cached = await self.cache.get(key)
            if cached is not None:
                return Streaming(
                    self,
                    caller,
                    req,
                    info,
                    None,
                    cached.model,
                    cached.provider,
                    cached=cached.result,
                    saved=cached.cost,
                )
        reservation = None
        try:
            plan = self.gateway.plan(caller, req)
            reservation = self._reserve(caller, plan.estimated_cost(req))
            live = await self.gateway.open_stream(plan, req)
        except SwitchyardError as exc:
            self._failed(caller, req, info, exc, reservation)
            raise
        cache_as = key if (key is not None and rules.write and self.cache is not None) else None
        return Streaming(
            self,
            caller,
            req,
            info,
            live,
            live.route.model.name,
            live.route.provider.name,
            reservation=reservation,
            cache_as=cache_as,
        )

    # -- helpers ----------------------------------------------------------------
    def _cache_rules(
        self, caller: Caller, req: ChatRequest, info: RequestInfo
    ) -> tuple[str | None, CachePolicy]:
        if self.cache is None:
            return None, CachePolicy(False, False)
        settings: CacheSettings = self.cache.settings
        rules = policy(settings, req, info.cache_control)
        if not (rules.read or rules.write):
            return None, rules
        return cache_key(caller.organization, req), rules

    def _known_model(self, caller: Caller, name: str) -> bool:
        catalog = self.gateway.catalog
        return catalog is not None and name in catalog.org(caller.organization).by_name

    def _reserve(self, caller: Caller, estimate: Decimal) -> Reservation | None:
        if self.budgets is None:
            return None
        return self.budgets.reserve(caller, estimate)

    def _children_for(self, api: str, provider: str, model: str) -> tuple[Any, ...]:
        key = (api, provider, model)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            children = self._children[key] = (
                m.requests.labels(api, provider, model, "200"),
                m.latency.labels(provider, model),
                m.ttft.labels(provider, model),
                m.tokens.labels(provider, model, "prompt"),
                m.tokens.labels(provider, model, "completion"),
                m.cost.labels(provider, model),
                m.cache_hits.labels(provider, model),
            )
        return children

    def _account(
        self,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        done: Completed,
        reservation: Reservation | None,
        *,
        stream: bool = False,
    ) -> None:
        requests, latency, ttft, prompt, completion, spend, hits = self._children_for(
            info.api, done.provider, done.model
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
            error=None,
            cache_hit=done.cache_hit,
            stream=stream,
            reservation=reservation,
        )

    def _failed(
        self,
        caller: Caller,
        req: ChatRequest,
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
        if model is None and req.model is not None and self._known_model(caller, req.model):
            model = req.model  # never a name the client made up: it would be stored and a label
        exc.accounted = True
        self.metrics.requests.labels(info.api, provider or "", model or "", str(exc.status)).inc()
        latency = (time.perf_counter() - info.started) * 1000
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

    def _record(
        self,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        *,
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
        reservation: Reservation | None = None,
    ) -> None:
        record = UsageRecord(
            id=info.id,
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
        )
        if self.recorder is not None:
            self.recorder.submit(record)
        # The estimate held for this request gives way to what it really cost.
        if reservation is not None and self.budgets is not None:
            self.budgets.settle(reservation, record)


def _chunks(text: str, size: int = 16) -> list[str]:
    """Split cached text into stream-sized pieces at word boundaries where possible."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.rfind(" ", start + 1, end + 1) if end < len(text) else -1
        if space > start:
            end = space
        out.append(text[start:end])
        start = end
    return out


class Streaming:
    """A stream to a client: live from a provider, or replayed from the cache."""

    def __init__(
        self,
        pipeline: Pipeline,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        live: LiveStream | None,
        model: str,
        provider: str,
        *,
        cached: ChatResult | None = None,
        saved: Decimal = Decimal(0),
        reservation: Reservation | None = None,
        cache_as: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.caller = caller
        self.req = req
        self.info = info
        self.live = live
        self.model = model
        self.provider = provider
        self.cached = cached
        self.saved = saved
        self.reservation = reservation
        self.cache_as = cache_as
        self.cache_hit = cached is not None
        self._accounted = False
        self.usage = Usage()
        self.cost: Cost = ZERO
        self.latency_ms = 0.0
        self.ttft_ms = (time.perf_counter() - info.started) * 1000

    async def events(self) -> AsyncIterator[StreamEvent]:
        if self.cached is not None:
            async for event in self._replay(self.cached):
                yield event
            return
        assert self.live is not None
        live = self.live
        text: list[str] = []
        calls: dict[int, list[str]] = {}
        keep = self.cache_as is not None
        finish: Finish | None = None
        try:
            async for event in live.events():
                if keep:
                    if type(event) is TextDelta:
                        text.append(event.text)
                    elif isinstance(event, ToolCallDelta):
                        entry = calls.setdefault(event.index, ["", "", ""])
                        entry[0] = event.id or entry[0]
                        entry[1] = event.name or entry[1]
                        entry[2] += event.arguments
                if isinstance(event, Finish):
                    finish = event
                yield event
        except SwitchyardError as exc:
            self._accounted = True
            self.pipeline._failed(
                self.caller,
                self.req,
                self.info,
                exc,
                self.reservation,
                provider=self.provider,
                model=self.model,
                usage=live.usage,
                cost=live.cost or ZERO,
                stream=True,
            )
            raise
        finally:
            if not self._accounted and finish is None:
                await self.close()
        if self._accounted:
            return
        self._accounted = True
        self.usage = live.usage
        self.cost = live.cost or ZERO
        self.latency_ms = live.latency_ms
        self.ttft_ms = live.ttft_ms
        result = ChatResult(
            content="".join(text),
            finish_reason=finish.reason if finish else "stop",
            usage=self.usage,
            upstream_model=self.model,
            tool_calls=[ToolCall(c[0], c[1], c[2]) for _, c in sorted(calls.items())],
        )
        done = Completed(
            result,
            self.model,
            self.provider,
            self.cost,
            Decimal(0),
            self.latency_ms,
            self.ttft_ms,
            False,
            live.attempts,
        )
        self.pipeline._account(
            self.caller, self.req, self.info, done, self.reservation, stream=True
        )
        cache = self.pipeline.cache
        if self.cache_as is not None and cache is not None and finish is not None:
            cache.put(
                self.cache_as,
                self.caller.organization,
                result,
                self.model,
                self.provider,
                self.cost.total,
            )

    async def close(self) -> None:
        """Account for a stream the client left before its end (or before it began)."""
        if self._accounted or self.live is None:
            return
        self._accounted = True
        live = self.live
        await live.close()
        left = ClientDisconnected("the client closed the connection mid-stream")
        self.pipeline._failed(
            self.caller,
            self.req,
            self.info,
            left,
            self.reservation,
            provider=self.provider,
            model=self.model,
            usage=live.usage,
            cost=live.cost or ZERO,
            stream=True,
        )

    async def _replay(self, result: ChatResult) -> AsyncIterator[StreamEvent]:
        # Counted up front: a hit costs nothing, and a client that leaves part way
        # through a replay still was served.
        self.usage = result.usage  # what the answer holds; the record says nothing was spent
        self.latency_ms = (time.perf_counter() - self.info.started) * 1000
        done = Completed(
            result,
            self.model,
            self.provider,
            ZERO,
            self.saved,
            self.latency_ms,
            self.ttft_ms,
            True,
            [],
        )
        self._accounted = True
        self.pipeline._account(self.caller, self.req, self.info, done, None, stream=True)
        for piece in _chunks(result.content):
            yield TextDelta(piece)
        for i, c in enumerate(result.tool_calls):
            yield ToolCallDelta(i, c.id, c.name, c.arguments)
        yield Finish(result.finish_reason, result.usage)
