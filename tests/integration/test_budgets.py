"""Spending limits per API key and per organization, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, READONLY_KEY, model, provider, table

Start = Callable[..., RouterServer]


def doc(fakes: Fakes, budgets: list[dict[str, Any]]) -> dict[str, Any]:
    d = table(
        [provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY")],
        # $1,000 per million output tokens: a 20-token answer costs about 2 cents.
        [
            model(
                "pricey",
                "openai",
                "gpt-4o-mini",
                inputPricePer1MTokens="1000",
                outputPricePer1MTokens="1000",
            )
        ],
    )
    d["budgets"] = budgets
    d["cache"] = {"enabled": False}
    return d


def ask(gw: RouterServer, max_tokens: int = 20) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"taskType": "t", "prompt": "a b c d e f g h i j", "maxTokens": max_tokens},
        timeout=10,
    )


def test_a_key_budget_refuses_what_it_cannot_pay_for(fakes: Fakes, stored_router: Start) -> None:
    # Each answer costs 0.025 USD (14 prompt and 11 completion tokens), and is estimated
    # beforehand at up to 0.039 (about 19 prompt tokens and the 20 asked for): after four
    # answers 0.02 is left, not enough for the fifth's estimate.
    gw = stored_router(doc(fakes, [{"apiKey": "test", "dailyUsd": "0.12"}]))
    spent = Decimal(0)
    codes = []
    for _ in range(10):
        r = ask(gw)
        codes.append(r.status_code)
        if r.status_code == 200:
            spent += Decimal(r.json()["cost"]["total"])
        else:
            refusal = r.json()["error"]
    assert codes == [200] * 4 + [429] * 6  # once refused, refused until the day ends
    assert spent == Decimal("0.1")
    assert refusal["code"] == "budget_exceeded"
    budget = refusal["budget"]
    assert (budget["scope"], budget["subject"], budget["period"]) == (
        "apiKey",
        "default/test",
        "day",
    )
    # Refused with money left: the estimate is more than what remains.
    assert Decimal(budget["remainingUsd"]) == Decimal("0.02")
    assert Decimal(budget["estimatedCostUsd"]) > Decimal(budget["remainingUsd"])
    assert "daily budget of API key 'default/test' cannot cover" in refusal["message"]
    # Nothing was sent upstream for the refused requests.
    assert fakes.openai.completions == codes.count(200)
    # The budget's spend over its limit is a gauge, set when the router reads the spend.
    assert used_ratio(gw, "default", "test", "day") == pytest.approx(0.1 / 0.12)


def used_ratio(gw: RouterServer, organization: str, api_key: str, period: str) -> float:
    """``switchyard_budget_used_ratio`` once what was spent is read back (within ~1 s)."""
    wanted = {"organization": organization, "api_key": api_key, "period": period}
    deadline = time.monotonic() + 5
    value = -1.0
    while time.monotonic() < deadline:
        text = httpx.get(f"{gw.admin}/metrics").text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "switchyard_budget_used_ratio" and s.labels == wanted:
                    value = s.value
        if value >= 0.8:
            break
        time.sleep(0.1)
    return value


def test_an_organization_budget_covers_all_its_keys(fakes: Fakes, stored_router: Start) -> None:
    gw = stored_router(doc(fakes, [{"organization": "default", "monthlyUsd": "0.05"}]))
    while ask(gw).status_code == 200:
        pass
    r = ask(gw)
    assert r.status_code == 429
    assert r.json()["error"]["budget"]["scope"] == "organization"
    assert r.json()["error"]["budget"]["period"] == "month"
    # The readonly key may not complete anyway; the refusal is about money, not scope.
    assert (
        httpx.get(
            f"{gw.url}/api/v1/llm/usage", headers={"Authorization": f"Bearer {READONLY_KEY}"}
        ).status_code
        == 200
    )


def test_budgets_hold_across_replicas(
    fakes: Fakes, stored_router: Start, database_url: str | None, tmp_path: Path
) -> None:
    budgets = [{"apiKey": "test", "dailyUsd": "0.10"}]
    a = stored_router(doc(fakes, budgets))
    b = stored_router(doc(fakes, budgets), state_dir=tmp_path / "state-b", replica_of=a)
    while ask(a).status_code == 200:
        pass
    # b learns of a's spending from the shared counters within about a second.
    deadline = time.monotonic() + 5
    while ask(b).status_code == 200:
        assert time.monotonic() < deadline, "replica b never saw replica a's spending"
        time.sleep(0.2)
    assert ask(b).json()["error"]["code"] == "budget_exceeded"
