"""What a call's outcome tells those who watch a model: taken out, serving again."""

from __future__ import annotations

import asyncio
from typing import Any

from switchyard.router.core.verdicts import Verdicts
from switchyard.router.errors import UpstreamStatusError
from switchyard.router.metrics import Metrics
from tests.support.tables import model
from tests.unit.test_selection import setup


def test_a_watcher_hears_of_each_change_once() -> None:
    catalog, _ = setup([model("m", "a", "llama")], breaker={"failureThreshold": 2})
    route = catalog.org("default").routes[0]
    verdicts = Verdicts(Metrics())
    heard: list[tuple[str, bool, str]] = []
    verdicts.on_model = lambda r, out, why: heard.append((r.model.model_name, out, why))
    cannot = UpstreamStatusError(
        "HTTP 400: llama does not support tools", provider="a", upstream_status=400
    )
    assert cannot.scope == "model"
    attempts: list[Any] = []
    for _ in range(2):
        assert asyncio.run(verdicts.claim(route, 10, attempts))
        verdicts.failed(route, cannot, attempts, 10)
    assert not asyncio.run(verdicts.claim(route, 10, attempts))  # out, on its own
    assert heard == [("llama", True, cannot.message)]
    verdicts.succeeded(route, 10, 5)
    verdicts.succeeded(route, 10, 5)
    assert heard[1:] == [("llama", False, "it answered again")]
