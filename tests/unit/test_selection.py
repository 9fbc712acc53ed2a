"""Selection: ranking, exclusions and determinism, on compiled tables."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.router.core.catalog import compile_table
from switchyard.router.core.health import ProviderStates
from switchyard.router.core.selection import Need, select
from switchyard.router.errors import BadRequest, NoCandidateAvailable, NotFound
from switchyard.router.table.loader import parse_document
from tests.support.tables import model, provider, table


def setup(
    models: list[dict[str, Any]], providers: list[dict[str, Any]] | None = None, **routing: Any
) -> tuple[Any, ProviderStates]:
    providers = providers or [
        provider("a", "vllm", "http://a/v1", priority=10),
        provider("b", "vllm", "http://b/v1", priority=20),
    ]
    catalog = compile_table(parse_document(table(providers, models, routing=routing)), "x")
    states = ProviderStates()
    states.sync(catalog, {})
    return catalog, states


def names(routes: list[Any]) -> list[str]:
    return [f"{r.provider.name}/{r.model.name}" for r in routes]


def need(**kw: Any) -> Need:
    base: dict[str, Any] = dict(
        model=None, task_type=None, prompt_tokens=10, max_tokens=100, stream=False, tools=False
    )
    base.update(kw)
    return Need(**base)


def test_task_fit_then_priority_then_price() -> None:
    catalog, _states = setup(
        [
            model("cheap", "b", inputPricePer1MTokens="0.1", outputPricePer1MTokens="0.1"),
            model("pricey", "b", inputPricePer1MTokens="9", outputPricePer1MTokens="9"),
            model("coder", "b", bestFor=["code"]),
            model("first", "a"),
        ]
    )
    org = catalog.org("default")
    assert names(select(org, need(task_type="code"), 0, 10)) == [
        "b/coder",
        "a/first",
        "b/cheap",
        "b/pricey",
    ]
    assert names(select(org, need(), 0, 2)) == ["a/first", "b/cheap"]


def test_rank_order_is_configurable() -> None:
    catalog, _states = setup(
        [
            model("a-model", "a", inputPricePer1MTokens="5"),
            model("b-model", "b", inputPricePer1MTokens="1"),
        ],
        rankBy=["price", "priority"],
    )
    assert names(select(catalog.org("default"), need(), 0, 5)) == [
        "b/b-model",
        "a/a-model",
    ]


def test_equal_scores_are_ordered_by_name() -> None:
    catalog, _states = setup([model(n, "a") for n in ["zeta", "alpha", "mid"]])
    for _ in range(3):
        assert names(select(catalog.org("default"), need(), 0, 5)) == [
            "a/alpha",
            "a/mid",
            "a/zeta",
        ]


def test_capabilities_and_context_exclude() -> None:
    catalog, _states = setup(
        [
            model("nostream", "a", supportsStreaming=False),
            model("notools", "a", supportsFunctionCalling=False),
            model("small", "a", contextWindow=1000, maxOutputTokens=500),
            model("big", "b", contextWindow=100000),
        ]
    )
    org = catalog.org("default")
    assert "a/nostream" not in names(select(org, need(stream=True), 0, 9))
    assert "a/notools" not in names(select(org, need(tools=True), 0, 9))
    # 800 prompt tokens + 300 output do not fit a 1000-token window.
    assert "a/small" not in names(select(org, need(prompt_tokens=800, max_tokens=300), 0, 9))
    assert "a/small" in names(select(org, need(prompt_tokens=600, max_tokens=300), 0, 9))


def test_explicit_model_names_a_group() -> None:
    catalog, _states = setup([model("gpt", "b"), model("gpt", "a"), model("other", "a")])
    org = catalog.org("default")
    assert names(select(org, need(model="gpt"), 0, 5)) == ["a/gpt", "b/gpt"]
    with pytest.raises(NotFound):
        select(org, need(model="nope"), 0, 5)


def test_disabled_and_unhealthy_get_no_traffic() -> None:
    catalog, _states = setup(
        [model("m1", "a"), model("m2", "b"), model("m3", "b", isEnabled=False)],
        providers=[
            provider("a", "vllm", "http://a/v1", healthStatus="unhealthy"),
            provider("b", "vllm", "http://b/v1"),
        ],
    )
    org = catalog.org("default")
    assert names(select(org, need(), 0, 5)) == ["b/m2"]
    with pytest.raises(NoCandidateAvailable, match="disabled"):
        select(org, need(model="m3"), 0, 5)


def test_open_breakers_and_spent_budgets_are_skipped() -> None:
    catalog, states = setup(
        [model("m1", "a"), model("m2", "b")],
        providers=[
            provider("a", "vllm", "http://a/v1", priority=1, rateLimits={"requestsPerMinute": 1}),
            provider("b", "vllm", "http://b/v1", priority=2),
        ],
        breaker={"failureThreshold": 1, "cooldownSeconds": 10},
    )
    org = catalog.org("default")
    states.get("default/a").limiter.try_acquire(1, 0)
    assert names(select(org, need(), 0, 5)) == ["b/m2"]
    states.get("default/b").breaker.record_failure(0)
    with pytest.raises(NoCandidateAvailable) as err:
        select(org, need(), 0, 5)
    assert "budget" in err.value.message and "cooling down" in err.value.message


def test_an_unspecified_max_tokens_is_checked_per_model() -> None:
    """The default output budget, capped by each model, must fit that model's window."""
    catalog, _ = setup(
        [
            model("g", "a", contextWindow=2000, maxOutputTokens=1500),
            model("g", "b", contextWindow=128000, maxOutputTokens=4096),
        ],
        defaultMaxTokens=1024,
    )
    org = catalog.org("default")
    # 1500 prompt tokens + the default 1024 do not fit 2000, though 1500 + 1 would.
    assert names(select(org, need(model="g", prompt_tokens=1500, max_tokens=None), 0, 5)) == ["b/g"]
    assert names(select(org, need(model="g", prompt_tokens=500, max_tokens=None), 0, 5)) == [
        "a/g",
        "b/g",
    ]


def test_a_request_too_big_for_every_model_is_the_clients_fault() -> None:
    catalog, _states = setup([model("m", "a", contextWindow=100, maxOutputTokens=50)])
    with pytest.raises(BadRequest, match=r"max_tokens: 60 is more than .* the most is 50"):
        select(catalog.org("default"), need(max_tokens=60), 0, 5)
    with pytest.raises(BadRequest, match="context window; the largest is 100 tokens"):
        select(catalog.org("default"), need(prompt_tokens=80, max_tokens=40), 0, 5)


def test_clamping_keeps_a_model_that_gives_less_than_asked() -> None:
    catalog, _states = setup([model("m", "a", contextWindow=1000, maxOutputTokens=300)])
    org = catalog.org("default")
    # More output than the model gives: kept, asked for its 300.
    assert names(select(org, need(max_tokens=600, clamp=True), 0, 5)) == ["a/m"]
    # 800 prompt tokens leave 200 of the window: kept, asked for 200.
    assert names(select(org, need(prompt_tokens=800, max_tokens=300, clamp=True), 0, 5)) == ["a/m"]
    # No room at all: skipped, and the request is the client's error.
    with pytest.raises(BadRequest, match="context window"):
        select(org, need(prompt_tokens=1000, max_tokens=300, clamp=True), 0, 5)
