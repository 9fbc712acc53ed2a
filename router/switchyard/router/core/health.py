"""What the router knows about each provider right now: breaker, budget, last probe."""

from __future__ import annotations

import time
from dataclasses import dataclass

from switchyard.router.core.adapter import ProbeResult
from switchyard.router.core.breaker import CircuitBreaker
from switchyard.router.core.catalog import Catalog, provider_key
from switchyard.router.core.ratelimit import RateLimiter


@dataclass(slots=True)
class ProviderState:
    breaker: CircuitBreaker
    limiter: RateLimiter
    limits: tuple[int | None, int | None]
    last_probe: ProbeResult | None = None
    key_problem: str | None = None  # the API key could not be resolved

    def usable(self, now: float) -> bool:
        if self.key_problem is not None:
            return False
        # A failed probe does not block a provider on its own: the breaker, fed by
        # real traffic, decides (a probe can fail while completions still work).
        return self.breaker.available(now)


class ProviderStates:
    """Survives table reloads: a provider's breaker and budget are not reset by an edit."""

    def __init__(self) -> None:
        self._states: dict[str, ProviderState] = {}

    def get(self, key: str) -> ProviderState:
        return self._states[key]

    def items(self) -> list[tuple[str, ProviderState]]:
        return list(self._states.items())

    def sync(self, catalog: Catalog, key_problems: dict[str, str | None]) -> None:
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
                        limiter=RateLimiter(limits[0], limits[1], now),
                        limits=limits,
                    )
                else:
                    state.breaker.configure(b.failure_threshold, b.cooldown_seconds)
                    if state.limits != limits:
                        state.limiter = RateLimiter(limits[0], limits[1], now)
                        state.limits = limits
                state.key_problem = key_problems.get(key)
                keep[key] = state
            for route in oc.routes:
                route.state = keep[route.provider_key]
        self._states = keep
