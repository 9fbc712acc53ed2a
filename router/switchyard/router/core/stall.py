"""When a call is taken for stalled: a deadline from the route's own recent latency.

A provider that stops answering while keeping its connections open (a process
paused, a saturated GPU queue, a half-dead load balancer) fails no request on its
own: each waits out the fixed first-token timeout. The router instead watches how
long each route's calls take to produce their first byte (a stream's first event,
a plain answer's whole body) and takes a call for stalled once it has waited a
few times the route's recent 99th percentile. The failover loop then asks the next
candidate (a hedge: the first call keeps running, and whichever answers first is
used) and the stalled call, if it loses, counts against the provider's breaker.

Only calls that answered are observed, so a stall does not teach the window that
stalling is normal; a slow call that wins anyway is observed, so a provider that
became slower raises its own deadline.

A plain call's answer takes longer the more output it is asked for, so its deadline
scales with that: the route's recent p99 of whole answers, plus its p99 of seconds
per output token (each answer's latency over the tokens it produced, which leans
high: it holds the time to the first token too) times the output this call may
produce. A call asking for a long answer gets a deadline as long, and none at all once
that passes the provider's fixed timeout: it is never hedged for being long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.router.contract import StallSettings

#: Samples kept per window: enough for a steady 99th percentile, small to sort.
WINDOW = 256
#: The percentile is recomputed after this many new samples, not on every call.
_REFRESH = 16


class LatencyWindow:
    """The last ``WINDOW`` latencies (seconds) of one kind of call on one route."""

    __slots__ = ("_count", "_next", "_p99", "_samples", "_since")

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._next = 0
        self._count = 0
        self._since = 0
        self._p99 = 0.0

    @property
    def count(self) -> int:
        return self._count

    def observe(self, seconds: float) -> None:
        samples = self._samples
        if len(samples) < WINDOW:
            samples.append(seconds)
        else:
            samples[self._next] = seconds
            self._next = (self._next + 1) % WINDOW
        self._count += 1
        self._since += 1
        if self._since >= _REFRESH or self._count <= _REFRESH:
            self._since = 0
            ordered = sorted(samples)
            self._p99 = ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]

    @property
    def p99(self) -> float:
        return self._p99

    def deadline(self, settings: StallSettings, cap: float) -> float | None:
        """Seconds after which a call is taken for stalled; None while too little is
        known, or when the deadline would not come before the fixed timeout ``cap``."""
        if self._count < settings.min_samples:
            return None
        deadline = max(self._p99 * settings.multiplier, settings.floor_ms / 1000)
        return deadline if deadline < cap else None


@dataclass(slots=True)
class RouteLatency:
    """A route's windows: a stream's first event, and a plain call's whole answer and
    its seconds per output token."""

    first_event: LatencyWindow = field(default_factory=LatencyWindow)
    answer: LatencyWindow = field(default_factory=LatencyWindow)
    per_token: LatencyWindow = field(default_factory=LatencyWindow)

    def answered(self, seconds: float, output_tokens: int | None) -> None:
        """A plain call answered in ``seconds`` with ``output_tokens`` (None: a call
        whose answer has no output, such as embeddings)."""
        self.answer.observe(seconds)
        if output_tokens is not None:
            self.per_token.observe(seconds / max(1, output_tokens))

    def answer_deadline(
        self, settings: StallSettings, cap: float, max_tokens: int | None
    ) -> float | None:
        """Seconds after which a plain call that may produce ``max_tokens`` is taken for
        stalled; None while too little is known, or when that would not come before
        the fixed timeout ``cap``."""
        if self.answer.count < settings.min_samples:
            return None
        expected = self.answer.p99
        if max_tokens:
            if self.per_token.count < settings.min_samples:
                return None
            expected += self.per_token.p99 * max_tokens
        deadline = max(expected * settings.multiplier, settings.floor_ms / 1000)
        return deadline if deadline < cap else None
