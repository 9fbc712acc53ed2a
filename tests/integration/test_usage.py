"""Usage records and the usage API, on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, OTHER_ORG_KEY, READONLY_KEY, model, provider, sha, table
from tests.support.usage_rows import wait_rows

AUTH = {"Authorization": f"Bearer {KEY}"}
Start = Callable[..., RouterServer]


def doc(fakes: Fakes) -> dict[str, Any]:
    return table(
        [
            provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
            provider("local", "vllm", fakes.vllm.url, priority=50),
            provider("other-local", "vllm", fakes.vllm.url, organization="other"),
        ],
        [
            model(
                "gpt",
                "openai",
                "gpt-4o-mini",
                inputPricePer1MTokens="0.15",
                outputPricePer1MTokens="0.60",
                bestFor=["code"],
            ),
            model(
                "llama",
                "local",
                "meta-llama/Llama-3.1-8B-Instruct",
                inputPricePer1MTokens="0.01",
                outputPricePer1MTokens="0.02",
                bestFor=["docs"],
            ),
            model("llama", "other-local", "meta-llama/Llama-3.1-8B-Instruct", organization="other"),
        ],
        routing={"breaker": {"failureThreshold": 100, "cooldownSeconds": 1}},
    )


def complete(gw: RouterServer, key: str = KEY, **body: Any) -> httpx.Response:
    payload = {"taskType": "code", "prompt": "hello world", **body}
    return httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers={"Authorization": f"Bearer {key}"},
        json=payload,
        timeout=10,
    )


def usage(gw: RouterServer, key: str = KEY, **params: str) -> httpx.Response:
    return httpx.get(
        f"{gw.url}/api/v1/llm/usage", params=params, headers={"Authorization": f"Bearer {key}"}
    )


def test_every_outcome_is_recorded(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes))
    ok = complete(gw).json()
    streamed = httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "docs", "prompt": "stream this", "stream": True},
    )
    assert streamed.status_code == 200
    fakes.openai.push(Fault.error(500))
    failed = complete(gw, model="gpt")
    assert failed.status_code == 503
    rows = wait_rows(database_url, gw.state_dir, 3)
    assert len(rows) == 3
    by_status = {(r["status"], r["stream"]): r for r in rows}
    first = by_status[("ok", False)]
    assert first["organization"] == "default" and first["api_key"] == "test"
    assert (first["provider"], first["model"], first["task_type"]) == ("openai", "gpt", "code")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (
        ok["usage"]["promptTokens"],
        ok["usage"]["completionTokens"],
    )
    assert first["total_cost"] == Decimal(ok["cost"]["total"])
    assert first["input_cost"] + first["output_cost"] == first["total_cost"]
    assert first["latency_ms"] > 0 and first["http_status"] == 200
    assert by_status[("ok", True)]["model"] == "llama"
    assert by_status[("ok", True)]["ttft_ms"] is not None
    err = by_status[("error", False)]
    assert (err["http_status"], err["error_class"], err["provider"]) == (
        503,
        "no_candidate_available",
        "openai",
    )
    assert err["total_cost"] == 0


def test_usage_report_matches_the_records(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes))
    for i in range(12):
        complete(gw, taskType="code" if i % 3 else "docs", prompt="word " * (i + 1))
    fakes.vllm.push(Fault.error(503), Fault.error(503))
    complete(gw, taskType="docs", model="llama")
    complete(gw, taskType="docs", model="llama")
    rows = wait_rows(database_url, gw.state_dir, 14)
    assert len(rows) == 14

    # The expected report, computed here from the stored records.
    def nearest_rank(values: list[float], p: float) -> float:
        values = sorted(values)
        rank = -(-p * len(values) // 1)  # ceil
        return values[int(rank) - 1]

    today = datetime.now(UTC).date().isoformat()
    # Whole days are read from the daily rollups, partial days from the records:
    # both must agree with the records.
    ranges = [{}, {"startDate": today, "endDate": today}]
    for (group_by, key_of), bounds in itertools.product(
        [
            ("model", lambda r: r["model"]),
            ("task", lambda r: r["task_type"]),
            ("provider", lambda r: r["provider"]),
            (
                "day",
                lambda r: (
                    r["requested_at"].strftime("%Y-%m-%d")
                    if hasattr(r["requested_at"], "strftime")
                    else None
                ),
            ),
        ],
        ranges,
    ):
        report = usage(gw, groupBy=group_by, **bounds).json()
        groups = {g["key"]: g for g in report["groups"]}
        if group_by == "day":
            assert sum(g["requests"] for g in groups.values()) == 14
            continue
        expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            expected[key_of(r) or "(none)"].append(r)
        assert set(groups) == set(expected)
        for key, members in expected.items():
            g = groups[key]
            assert g["requests"] == len(members)
            assert g["errors"] == sum(r["status"] != "ok" for r in members)
            assert g["promptTokens"] == sum(r["prompt_tokens"] for r in members)
            assert g["completionTokens"] == sum(r["completion_tokens"] for r in members)
            assert Decimal(g["cost"]) == sum((r["total_cost"] for r in members), Decimal(0))
            lat = [r["latency_ms"] for r in members]
            # Percentiles come from histograms whose buckets are 6.3% wide.
            assert g["latencyMs"]["p50"] == pytest.approx(nearest_rank(lat, 0.5), rel=0.032)
            assert g["latencyMs"]["p95"] == pytest.approx(nearest_rank(lat, 0.95), rel=0.032)
    for bounds in ranges:
        totals = usage(gw, **bounds).json()["totals"]
        assert totals["requests"] == 14 and totals["errors"] == 2
        assert Decimal(totals["cost"]) == sum((r["total_cost"] for r in rows), Decimal(0))


def test_periods_and_dates(fakes: Fakes, stored_router: Start, database_url: str | None) -> None:
    gw = stored_router(doc(fakes))
    complete(gw)
    wait_rows(database_url, gw.state_dir, 1)
    for group_by in ("day", "week", "month"):
        report = usage(gw, groupBy=group_by).json()
        assert report["totals"]["requests"] == 1
        assert len(report["groups"]) == 1
    week = usage(gw, groupBy="week").json()["groups"][0]["key"]
    import datetime as dt

    assert dt.date.fromisoformat(week).weekday() == 0  # weeks start on Monday
    assert usage(gw, startDate="2020-01-01", endDate="2020-01-31").json()["totals"]["requests"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"startDate": "yesterday"}, "startDate"),
        ({"endDate": "2026-13-01"}, "endDate"),
        ({"startDate": "2026-11-02", "endDate": "2026-11-01"}, "endDate"),
        ({"groupBy": "user; DROP TABLE llm_requests"}, "groupBy"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_usage_queries(
    fakes: Fakes, stored_router: Start, params: dict[str, str], field: str
) -> None:
    gw = stored_router(doc(fakes))
    r = usage(gw, **params)
    assert r.status_code == 400
    assert r.json()["error"]["field"] == field


def test_usage_is_scoped_to_the_callers_organization(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes))
    complete(gw)
    complete(gw, key=OTHER_ORG_KEY, model="llama")
    wait_rows(database_url, gw.state_dir, 2)
    mine = usage(gw).json()
    assert mine["organization"] == "default" and mine["totals"]["requests"] == 1
    assert usage(gw, key=READONLY_KEY).json()["totals"]["requests"] == 1
    # Explicit ranges that are partial days are read from the records, not the rollups:
    # those too are the caller's organization's only.
    now = datetime.now(UTC)
    for start, end in (
        (now - timedelta(hours=1), now + timedelta(hours=1)),
        (now.replace(hour=0, minute=0, second=0, microsecond=0), now + timedelta(minutes=5)),
    ):
        for group_by in ("day", "model", "provider"):
            partial = usage(
                gw, startDate=start.isoformat(), endDate=end.isoformat(), groupBy=group_by
            ).json()
            assert partial["totals"]["requests"] == 1, (start, end, group_by)
            assert sum(g["requests"] for g in partial["groups"]) == 1
    # The other organization's key has no usage:read scope.
    assert usage(gw, key=OTHER_ORG_KEY).status_code == 403


def test_usage_by_api_key(fakes: Fakes, stored_router: Start, database_url: str | None) -> None:
    doc_ = doc(fakes)
    second = "sy-test-second-key-0123"
    doc_["apiKeys"].append({"name": "ci", "sha256": sha(second), "scopes": ["completion"]})
    gw = stored_router(doc_)
    for key in (KEY, KEY, second, KEY, second):
        assert complete(gw, key=key).status_code == 200
    fakes.openai.push(Fault.error(500))
    assert complete(gw, key=second, model="gpt").status_code == 503
    assert complete(gw, key=OTHER_ORG_KEY, model="llama").status_code == 200
    rows = wait_rows(database_url, gw.state_dir, 7)
    assert len(rows) == 7
    now = datetime.now(UTC)
    # Today so far from its rollup (the default range), and a partial day from the records.
    for bounds in (
        {},
        {"startDate": (now - timedelta(hours=1)).isoformat(), "endDate": now.isoformat()},
    ):
        report = usage(gw, groupBy="apiKey", **bounds).json()
        assert report["groupBy"] == "apiKey"
        groups = {g["key"]: (g["requests"], g["errors"]) for g in report["groups"]}
        assert groups == {"test": (3, 0), "ci": (3, 1)}, bounds
        cost = {
            k: sum((r["total_cost"] for r in rows if r["api_key"] == k), Decimal(0))
            for k in ("test", "ci")
        }
        assert {g["key"]: Decimal(g["cost"]) for g in report["groups"]} == cost
