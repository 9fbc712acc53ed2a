"""A stream committed to one provider, settled exactly once however it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import (
    Finish,
    Relayed,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    estimate_tokens,
)
from switchyard.router.core.cost import Cost, cost_of
from switchyard.router.core.verdicts import Verdicts
from switchyard.router.errors import (
    Attempt,
    InternalError,
    SwitchyardError,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger("switchyard.router")


def own_failure(route: Route, exc: Exception) -> InternalError:
    """An error raised inside the router while it called a provider: logged here, once.

    The provider is not blamed: it answered nothing that caused this.
    """
    log.error("the router failed calling provider %s", route.provider_key, exc_info=exc)
    return InternalError("the router failed while calling the provider; see the router's log")


async def close_events(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as exc:
            log.debug("closing an upstream stream failed: %s", exc)


class LiveStream:
    """A stream committed to one provider.

    Iterate ``events()`` once; call ``close()`` if it may not have been iterated
    to the end (a client that left). Either way the provider's breaker, budget
    and the stream's usage are settled exactly once.
    """

    def __init__(
        self,
        verdicts: Verdicts,
        route: Route,
        events: AsyncIterator[StreamEvent],
        first: StreamEvent,
        *,
        started: float,
        reserved: int,
        prompt_tokens_estimate: int,
        attempts: list[Attempt],
        gap: float | None = None,
    ) -> None:
        self.verdicts = verdicts
        self.route = route
        self._events = events
        self._first: StreamEvent | None = first
        self.started = started
        self.reserved = reserved
        self.prompt_tokens_estimate = prompt_tokens_estimate
        self.attempts = attempts
        self.ttft_ms = (time.perf_counter() - started) * 1000
        self.latency_ms = 0.0
        self.usage = Usage()
        self.cost: Cost | None = None
        self.finished = False  # the provider said it was done
        self._settled = False
        self._text_bytes = 0
        #: The provider's events go to the client as sent (``Relayed``).
        self.relayed = type(first) is Relayed
        #: Seconds without an event after which the stream is taken for stalled (a
        #: stream that may continue elsewhere); None: the provider's fixed timeouts.
        self.gap = gap

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event; the last is ``Finish`` with real usage. Upstream errors propagate."""
        finish: Finish | None = None
        error: UpstreamError | None = None
        try:
            event = self._first
            self._first = None
            while event is not None:
                if type(event) is Relayed:
                    self._text_bytes += event.text_bytes
                elif type(event) is TextDelta:
                    self._text_bytes += len(event.text)
                elif type(event) is ToolCallDelta:
                    self._text_bytes += len(event.arguments)
                elif isinstance(event, Finish):
                    finish = event
                yield event
                if finish is not None:
                    break
                try:
                    if self.gap is None:
                        event = await anext(self._events)
                    else:
                        event = await self._next_within(self.gap)
                except StopAsyncIteration:
                    break
                except SwitchyardError:
                    raise
                except Exception as exc:
                    raise own_failure(self.route, exc) from exc
        except UpstreamError as exc:
            error = exc
            raise
        finally:
            await self._settle(finish, error)

    async def _next_within(self, gap: float) -> StreamEvent:
        try:
            async with asyncio.timeout(gap):
                return await anext(self._events)
        except TimeoutError:
            raise UpstreamTimeout(
                f"the stream stalled: nothing for {gap:.2f}s", provider=self.route.provider.name
            ) from None

    async def close(self) -> None:
        """Settle a stream that was never iterated, or abandoned part way."""
        await self._settle(None, None)

    async def _settle(self, finish: Finish | None, error: UpstreamError | None) -> None:
        if self._settled:
            return
        self._settled = True
        await close_events(self._events)
        self.latency_ms = (time.perf_counter() - self.started) * 1000
        usage = finish.usage if finish is not None else None
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            # The provider did not say; estimate rather than bill nothing.
            usage = Usage(self.prompt_tokens_estimate, estimate_tokens(self._text_bytes))
        self.usage = usage
        self.cost = cost_of(self.route, usage)
        used = usage.total_tokens
        if finish is not None:
            self.finished = True
            self.verdicts.succeeded(self.route, self.reserved, used)
        elif error is not None:
            self.verdicts.failed(self.route, error, self.attempts, self.reserved, used)
        else:
            self.verdicts.abandoned(self.route, self.reserved, used)
