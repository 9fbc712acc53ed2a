"""What one call's outcome means for its provider: breaker, rate budget and metrics.

The failover loop and a live stream settle their calls here, so a provider is judged
the same way whether its answer was streamed or not, and each claim on a breaker or a
budget is given back exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from switchyard.router.core.breaker import BreakerState
from switchyard.router.core.catalog import Route
from switchyard.router.errors import Attempt, UpstreamError
from switchyard.router.metrics import Metrics

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

    def claim(self, route: Route, tokens: int, attempts: list[Attempt]) -> bool:
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
        if not state.limiter.try_acquire(tokens, now):
            route.model_breaker.release()
            state.breaker.release()
            attempts.append(
                Attempt(route.provider.name, route.name, "rate_limited", None, "local budget spent")
            )
            return False
        return True

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
        else:
            breaker.record_success()
        route.state.limiter.reconcile(reserved, used)

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
            state.breaker.record_failure(time.monotonic(), retry_after)
            self.metrics.breaker_state.labels(*_who(route)).set(int(state.breaker.state))
        elif exc.scope == "model":
            # The provider answered: it is not to blame. The model is, on its own.
            state.breaker.release()
            was = route.model_breaker.state
            route.model_breaker.record_failure(time.monotonic())
            if route.model_breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
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
        state.limiter.reconcile(reserved, used)
        self.metrics.upstream_errors.labels(*_who(route), exc.code).inc()
        attempts.append(
            Attempt(route.provider.name, route.name, exc.code, exc.upstream_status, exc.message)
        )
        log.info("provider %s failed: %s", route.provider_key, exc.detail)

    def abandoned(self, route: Route, reserved: int, used: int = 0) -> None:
        """The caller left (or was cancelled): no verdict on the provider."""
        route.model_breaker.release()
        route.state.breaker.release()
        route.state.limiter.reconcile(reserved, used)
