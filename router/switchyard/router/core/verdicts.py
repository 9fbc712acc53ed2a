"""What one call's outcome means for its provider: breaker, rate budget and metrics.

The failover loop and a live stream settle their calls here, so a provider is judged
the same way whether its answer was streamed or not, and each claim on a breaker or a
budget is given back exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchyard.router.core.breaker import BreakerState
from switchyard.router.core.catalog import Route
from switchyard.router.core.health import ProviderStates
from switchyard.router.core.ratelimit import RateLimiter
from switchyard.router.errors import Attempt, UpstreamError
from switchyard.router.metrics import Metrics
from switchyard.router.storage.cells import Cell

if TYPE_CHECKING:
    # Loaded only with --redis-url: the Redis client is no small import.
    from switchyard.router.storage.shared_state import SharedState

log = logging.getLogger("switchyard.router")

#: Told when a model is taken out on its provider (True, with why) or serves again
#: (False): a router that follows a cluster says so on the model's LLMModel.
ModelWatcher = Callable[[Route, bool, str], None]


def _who(route: Route) -> tuple[str, str]:
    """The organization and provider labels of a route's series."""
    return route.provider.organization, route.provider.name


class Verdicts:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        #: The table's cap on a provider's Retry-After, in seconds.
        self.max_retry_after = 60.0
        self.on_model: ModelWatcher | None = None
        #: Budgets and breaker news shared by every replica (None: this process alone).
        self.shared: SharedState | None = None

    async def claim(self, route: Route, tokens: int, attempts: list[Attempt]) -> bool:
        """Take the breaker's permission and ``tokens`` of the rate budget, or say why not."""
        state = route.state
        now = time.monotonic()
        if not route.model_breaker.try_acquire(now):
            attempts.append(
                Attempt(
                    route.provider.name,
                    route.name,
                    "model_unavailable",
                    None,
                    "the model kept failing on this provider; it is out for a while",
                )
            )
            return False
        if not state.breaker.try_acquire(now):
            route.model_breaker.release()
            attempts.append(
                Attempt(route.provider.name, route.name, "circuit_open", None, "breaker is open")
            )
            return False
        limiter = state.limiter
        shared = self.shared
        taken = None
        if shared is not None and shared.connected:
            taken = await self._take_shared(limiter, tokens)
        if taken is None:  # no shared state: this process's own budget
            taken = limiter.try_acquire(tokens, now)
        if not taken:
            route.model_breaker.release()
            state.breaker.release()
            attempts.append(
                Attempt(route.provider.name, route.name, "rate_limited", None, "local budget spent")
            )
            return False
        return True

    async def _take_shared(self, limiter: RateLimiter, tokens: int) -> bool | None:
        """Both budgets from the replicas' shared cells: None when Redis cannot say."""
        shared = self.shared
        if shared is None or not shared.connected:
            return None
        cells: list[Cell] = []
        amounts: list[float] = []
        if limiter.request_cell is not None:
            cells.append(limiter.request_cell)
            amounts.append(1)
        if limiter.token_cell is not None:
            cells.append(limiter.token_cell)
            amounts.append(tokens)
        if not cells:
            return None
        wait = await shared.take(cells, amounts)
        return None if wait is None else wait == 0.0

    @staticmethod
    def ready_in(routes: list[Route]) -> float | None:
        """Seconds until the first of ``routes``' providers may be tried again; None when
        one may be tried now (the next request may well succeed)."""
        now = time.monotonic()
        wait = min(r.state.breaker.ready_in(now) for r in routes) if routes else 0.0
        return wait or None

    def succeeded(self, route: Route, reserved: int, used: int) -> None:
        if route.model_breaker.state:
            route.model_breaker.record_success()
            route.state.models_out.pop(route.model.model_name, None)
            log.info(
                "model %s on provider %s serves again", route.model.model_name, route.provider_key
            )
            if self.on_model is not None:
                self.on_model(route, False, "it answered again")
        else:
            route.model_breaker.record_success()
        breaker = route.state.breaker
        if breaker.state:
            breaker.record_success()
            self.metrics.breaker_state.labels(*_who(route)).set(0)
            if self.shared is not None:
                self.shared.publish({"provider": route.provider_key, "closed": True})
        else:
            breaker.record_success()
        self._reconcile(route, reserved, used)

    def failed(
        self,
        route: Route,
        exc: UpstreamError,
        attempts: list[Attempt],
        reserved: int,
        used: int = 0,
    ) -> None:
        """Count a provider's failure; a request the provider rightly refused is not one."""
        state = route.state
        if exc.scope == "provider" and exc.retryable:
            route.model_breaker.release()
            retry_after = exc.retry_after
            if retry_after is not None:
                retry_after = min(retry_after, self.max_retry_after)
            was = state.breaker.state
            state.last_failure = _why(exc)
            state.breaker.record_failure(time.monotonic(), retry_after)
            self.metrics.breaker_state.labels(*_who(route)).set(int(state.breaker.state))
            opened = state.breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN
            if self.shared is not None and (opened or retry_after):
                # The other replicas hold the provider back too.
                self.shared.publish(
                    {"provider": route.provider_key, "open": opened, "resume_in": retry_after}
                )
        elif exc.scope == "model":
            # The provider answered: it is not to blame. The model is, on its own.
            state.breaker.release()
            was = route.model_breaker.state
            route.model_breaker.record_failure(time.monotonic())
            if route.model_breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
                state.models_out[route.model.model_name] = _why(exc)
                log.warning(
                    "model %s on provider %s is out for a while: %s",
                    route.model.model_name,
                    route.provider_key,
                    exc.message,
                )
                if self.on_model is not None:
                    self.on_model(route, True, exc.message)
        else:
            route.model_breaker.release()
            state.breaker.release()
        self._reconcile(route, reserved, used)
        self.metrics.upstream_errors.labels(*_who(route), exc.code).inc()
        attempts.append(
            Attempt(route.provider.name, route.name, exc.code, exc.upstream_status, exc.message)
        )
        log.info("provider %s failed: %s", route.provider_key, exc.detail)

    def news(self, states: ProviderStates, news: dict[str, Any]) -> None:
        """Another replica's breaker opened or closed, or its provider asked to wait."""
        try:
            state = states.get(str(news["provider"]))
        except KeyError:
            return  # a provider this replica's table does not hold (yet)
        now = time.monotonic()
        breaker = state.breaker
        if news.get("open") and breaker.state is not BreakerState.OPEN:
            breaker.force_open(now)
            state.last_failure = "another router replica's calls failed"
        resume_in = news.get("resume_in")
        if isinstance(resume_in, (int, float)) and resume_in > 0:
            breaker.hold(now + min(float(resume_in), self.max_retry_after))
        if news.get("closed") and breaker.state:
            breaker.record_success()
        organization, _, name = str(news["provider"]).partition("/")
        self.metrics.breaker_state.labels(organization, name).set(int(breaker.state))

    def _reconcile(self, route: Route, reserved: int, used: int) -> None:
        limiter = route.state.limiter
        shared = self.shared
        cell = limiter.token_cell
        if shared is not None and shared.connected and cell is not None:
            shared.give(cell, reserved - used)
        else:
            limiter.reconcile(reserved, used)

    def abandoned(self, route: Route, reserved: int, used: int = 0) -> None:
        """The caller left (or was cancelled): no verdict on the provider."""
        route.model_breaker.release()
        route.state.breaker.release()
        self._reconcile(route, reserved, used)


#: At most this much of an upstream's error message is kept for display.
WHY_CHARS = 300


def _why(exc: UpstreamError) -> str:
    """A failure as the providers API shows it: the upstream's message cut short (an
    upstream's message is its own, of any length), and the error's code."""
    return f"{exc.message[:WHY_CHARS]} ({exc.code})"
