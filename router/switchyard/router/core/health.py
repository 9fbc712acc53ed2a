"""What the router knows about each provider right now: breaker, budget, last probe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from switchyard.router.core.adapter import ProbeResult
from switchyard.router.core.breaker import CircuitBreaker
from switchyard.router.core.catalog import Catalog, provider_key
from switchyard.router.core.ratelimit import RateLimiter
from switchyard.router.core.stall import RouteLatency


@dataclass(slots=True)
class ProviderState:
    breaker: CircuitBreaker
    limiter: RateLimiter
    limits: tuple[int | None, int | None]
    last_probe: ProbeResult | None = None
    key_problem: str | None = None  # the API key could not be resolved
    #: Its baseUrl may not be reached (``providers.addresses``): it is not used.
    refused: str | None = None
    #: One breaker per model the provider serves (by its upstream name), for failures
    #: that are the model's alone (``UpstreamError.scope``): it is taken out on its own.
    models: dict[str, CircuitBreaker] = field(default_factory=dict)
    #: How long each model's calls have been taking, for stall deadlines (``core.stall``).
    latencies: dict[str, RouteLatency] = field(default_factory=dict)
    #: Why its last call failed, as the provider's fault, and why each model taken out
    #: on its own went (by upstream name): what the providers API and the console show.
    last_failure: str | None = None
    models_out: dict[str, str] = field(default_factory=dict)

    def usable(self, now: float) -> bool:
        if self.key_problem is not None or self.refused is not None:
            return False
        # A failed probe does not block a provider on its own: the breaker, fed by
        # real traffic, decides (a probe can fail while completions still work).
        return self.breaker.available(now)


class ProviderStates:
    """Survives table reloads: a provider's breaker and budget are not reset by an edit."""

    def __init__(self) -> None:
        self._states: dict[str, ProviderState] = {}
        #: Router processes serving as one (``--workers`` at start, then replicas and
        #: workers as counted on the shared state): each process's own rate budgets are
        #: this share of a provider's limits, so that together they keep them (shared
        #: budgets on Redis, while it answers, keep the whole limit).
        self.processes = 1

    def share(self, processes: int) -> None:
        """``processes`` serve as one (replicas and workers, counted on the shared
        state): each keeps 1/``processes`` of every provider's rate limits."""
        self.processes = max(processes, 1)
        for state in self._states.values():
            state.limiter.share(state.limits[0], state.limits[1], self.processes)

    def get(self, key: str) -> ProviderState:
        return self._states[key]

    def items(self) -> list[tuple[str, ProviderState]]:
        return list(self._states.items())

    def sync(
        self,
        catalog: Catalog,
        key_problems: dict[str, str | None],
        refused: dict[str, str | None] | None = None,
    ) -> None:
        now = time.monotonic()
        b = catalog.settings.breaker
        keep: dict[str, ProviderState] = {}
        for oc in catalog.orgs.values():
            for p in oc.providers.values():
                key = provider_key(p)
                state = self._states.get(key)
                limits = (p.rate_limits.requests_per_minute, p.rate_limits.tokens_per_minute)
                if state is None:
                    state = ProviderState(
                        breaker=CircuitBreaker(b.failure_threshold, b.cooldown_seconds),
                        limiter=RateLimiter(limits[0], limits[1], now, key, self.processes),
                        limits=limits,
                    )
                else:
                    state.breaker.configure(b.failure_threshold, b.cooldown_seconds)
                    if state.limits != limits:
                        state.limiter = RateLimiter(limits[0], limits[1], now, key, self.processes)
                        state.limits = limits
                state.key_problem = key_problems.get(key)
                state.refused = (refused or {}).get(key)
                keep[key] = state
        used: dict[str, set[str]] = {}
        for oc in catalog.orgs.values():
            for route in oc.routes:
                state = keep[route.provider_key]
                name = route.model.model_name
                breaker = state.models.get(name)
                if breaker is None:
                    breaker = state.models[name] = CircuitBreaker(
                        b.failure_threshold, b.cooldown_seconds
                    )
                else:
                    breaker.configure(b.failure_threshold, b.cooldown_seconds)
                route.state = state
                route.model_breaker = breaker
                latency = state.latencies.get(name)
                if latency is None:
                    latency = state.latencies[name] = RouteLatency()
                route.latency = latency
                used.setdefault(route.provider_key, set()).add(name)
        for key, state in keep.items():
            names = used.get(key, set())
            state.models = {n: br for n, br in state.models.items() if n in names}
            state.latencies = {n: lt for n, lt in state.latencies.items() if n in names}
        self._states = keep
