"""A stream to a client: live from a provider, or replayed from the cache.

Whichever way it ends (finished, failed, or the client left) it is accounted once, and
a finished live stream that may be cached is kept for the next identical request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

from switchyard.router.core.accounting import Accountant, Completed, RequestInfo
from switchyard.router.core.budgets import Reservation
from switchyard.router.core.cache import Cached, ResponseCache
from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Route
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
from switchyard.router.core.cost import ZERO, Cost, cost_sum
from switchyard.router.core.live_stream import LiveStream
from switchyard.router.core.traced import gen_ai_provider_name
from switchyard.router.errors import Attempt, ClientDisconnected, SwitchyardError, UpstreamError

#: Opens the continuation of a stream that broke on ``Route`` after the text given.
Continuer = Callable[[Route, str], Awaitable[LiveStream]]


log = logging.getLogger("switchyard.router")


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
    """Iterate ``events()`` once; ``close()`` settles a stream the client left."""

    def __init__(
        self,
        accountant: Accountant,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        model: str,
        provider: str,
    ) -> None:
        self.accountant = accountant
        self.caller = caller
        self.req = req
        self.info = info
        self.model = model
        self.provider = provider
        self.live: LiveStream | None = None
        self.cached: ChatResult | None = None
        self.saved = Decimal(0)
        self.reservation: Reservation | None = None
        self.cache: ResponseCache | None = None
        self.cache_as: str | None = None
        self._accounted = False
        #: The whole answer once the stream ended, when it was read in full (cached or
        #: collected; see ``ChatRequest.collect``).
        self.result: ChatResult | None = None
        self.usage = Usage()
        self.cost: Cost = ZERO
        self.latency_ms = 0.0
        self.ttft_ms = (time.perf_counter() - info.started) * 1000
        #: Continues the stream elsewhere if it breaks mid-way (None: it may not).
        self.continuer: Continuer | None = None
        #: The streams that broke and were continued, in order.
        self.broken: list[LiveStream] = []

    @property
    def continued_from(self) -> list[str]:
        """The providers whose part of the answer broke off, in order."""
        return [b.route.provider.name for b in self.broken]

    @classmethod
    def from_provider(
        cls,
        accountant: Accountant,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        live: LiveStream,
        *,
        reservation: Reservation | None,
        cache: ResponseCache | None,
        cache_as: str | None,
        continuer: Continuer | None = None,
    ) -> Streaming:
        s = cls(accountant, caller, req, info, live.route.model.name, live.route.provider.name)
        s.live = live
        s.reservation = reservation
        s.cache = cache
        s.cache_as = cache_as
        s.continuer = continuer
        return s

    @classmethod
    def from_cache(
        cls,
        accountant: Accountant,
        caller: Caller,
        req: ChatRequest,
        info: RequestInfo,
        cached: Cached,
    ) -> Streaming:
        s = cls(accountant, caller, req, info, cached.model, cached.provider)
        s.cached = cached.result
        s.saved = cached.cost
        return s

    @property
    def cache_hit(self) -> bool:
        return self.cached is not None

    @property
    def relayed(self) -> bool:
        """The provider's events are relayed as sent (see ``chat.Relayed``)."""
        return self.live is not None and self.live.relayed

    @property
    def max_tokens(self) -> int | None:
        """The output cap the provider was asked for (None: from the cache)."""
        live = self.live
        return None if live is None else live.reserved - live.prompt_tokens_estimate

    async def events(self) -> AsyncIterator[StreamEvent]:
        if self.cached is not None:
            self.result = self.cached
            async for event in self._replay(self.cached):
                yield event
            return
        assert self.live is not None
        text: list[str] = []
        calls: dict[int, list[str]] = {}
        keep = self.cache_as is not None or self.req.collect or self.continuer is not None
        finish: Finish | None = None
        try:
            while True:
                live = self.live
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
                    break
                except UpstreamError as exc:
                    if not await self._continue(exc, "".join(text), bool(calls)):
                        raise
        except SwitchyardError as exc:
            self._accounted = True
            self._failed(exc)
            raise
        finally:
            if not self._accounted and finish is None:
                await self.close()
        if self._accounted:
            return
        self._accounted = True
        live = self.live
        self.usage, self.cost = self._spent()
        self.latency_ms = live.latency_ms
        self.ttft_ms = self.broken[0].ttft_ms if self.broken else live.ttft_ms
        result = ChatResult(
            content="".join(text),
            finish_reason=finish.reason if finish else "stop",
            usage=self.usage,
            upstream_model=self.model,
            tool_calls=[ToolCall(c[0], c[1], c[2]) for _, c in sorted(calls.items())],
        )
        if keep:
            self.result = result
        done = Completed(
            result,
            self.model,
            self.provider,
            self.cost,
            Decimal(0),
            self.latency_ms,
            self.ttft_ms,
            False,
            self._attempts(),
            continued=bool(self.broken),
            gen_ai_provider=gen_ai_provider_name(live.route.provider.provider_type),
        )
        self.accountant.served(
            self.caller, self.req, self.info, done, self.reservation, stream=True
        )
        if self.cache_as is not None and self.cache is not None and finish is not None:
            self.cache.put(
                self.cache_as,
                self.caller.organization,
                result,
                self.model,
                self.provider,
                self.cost.total,
            )

    async def _continue(self, exc: UpstreamError, text: str, calls: bool) -> bool:
        """Go on with another candidate after a break, when the stream may and can: text
        was sent (so nothing before the first byte could serve), and no tool call was
        begun (half a call's arguments cannot be continued)."""
        live = self.live
        if self.continuer is None or live is None or not text or calls or not exc.retryable:
            return False
        try:
            following = await self.continuer(live.route, text)
        except SwitchyardError as failure:
            log.info("a stream could not be continued: %s", failure.message)
            return False
        log.info(
            "a stream broke on provider %s (%s); continued on %s",
            live.route.provider_key,
            exc.code,
            following.route.provider_key,
        )
        self.broken.append(live)
        self.live = following
        self.provider = following.route.provider.name
        return True

    def _spent(self) -> tuple[Usage, Cost]:
        """What every part of the stream used and cost: the live one and any that broke."""
        assert self.live is not None
        parts = [*self.broken, self.live]
        usage = Usage(
            sum(p.usage.prompt_tokens for p in parts),
            sum(p.usage.completion_tokens for p in parts),
        )
        return usage, cost_sum(p.cost or ZERO for p in parts)

    def _attempts(self) -> list[Attempt]:
        """The stream's attempts; a continued stream's breaks are marked among them."""
        assert self.live is not None
        out: list[Attempt] = []
        for b in self.broken:
            out += b.attempts
            out.append(
                Attempt(
                    b.route.provider.name,
                    b.route.name,
                    "stream_continued",
                    None,
                    f"the stream broke after {b.usage.completion_tokens} tokens and was "
                    "continued on the next candidate",
                )
            )
        return out + self.live.attempts

    async def close(self) -> None:
        """Account for a stream the client left before its end (or before it began)."""
        if self._accounted or self.live is None:
            return
        self._accounted = True
        await self.live.close()
        self._failed(ClientDisconnected("the client closed the connection mid-stream"))

    def _failed(self, exc: SwitchyardError) -> None:
        usage, cost = self._spent()
        self.accountant.failed(
            self.caller,
            self.req,
            self.info,
            exc,
            self.reservation,
            provider=self.provider,
            model=self.model,
            usage=usage,
            cost=cost,
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
        self.accountant.served(self.caller, self.req, self.info, done, None, stream=True)
        for piece in _chunks(result.content):
            yield TextDelta(piece)
        for i, c in enumerate(result.tool_calls):
            yield ToolCallDelta(i, c.id, c.name, c.arguments)
        yield Finish(result.finish_reason, result.usage)
