"""The console at ``/console`` in a real headless Chromium, on both stores.

A key with ``usage:read`` signs in and sees its organization's spend to the cent as the
usage API gives it (totals, by model, by API key), its providers with the open breaker
and why, its budgets against their limits, and the last hour's slowest and failed
requests with the trace ids a real OpenTelemetry Collector received. Another
organization's key sees none of it; a key without ``usage:read`` is told so. The page
loads nothing from anywhere but the router.

``SWITCHYARD_CONSOLE_SCREENSHOTS=docs/img ./dev test tests/browser`` keeps a screenshot
of each view where the README shows them.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import threading
import time as time_module
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchyard.router.storage.postgres import PostgresStore
from switchyard.router.storage.sqlite import SQLiteStore
from switchyard.router.tracing import TraceConfig
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.collector import Collector
from tests.support.servers import RouterServer, write_table
from tests.support.tables import model, provider, sha, table
from tests.support.usage_rows import usage_record

KEYS = {
    "app": ("sy-console-app-key", "default", ["completion"]),
    "batch": ("sy-console-batch-key", "default", ["completion"]),
    "reader": ("sy-console-reader-key", "default", ["usage:read"]),
    "globex-app": ("sy-console-globex-app", "globex", ["completion"]),
    "globex-reader": ("sy-console-globex-reader", "globex", ["usage:read"]),
}
NANO = Decimal(10) ** 9
#: Prices that make each request cost cents, so that rounding to the cent shows.
PRICES = {"inputPricePer1MTokens": "2500.00", "outputPricePer1MTokens": "9000.00"}


def _key(name: str) -> str:
    return KEYS[name][0]


def _table(fakes: Fakes) -> dict[str, Any]:
    doc = table(
        [
            provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
            provider("anthropic", "anthropic", fakes.anthropic.url,
                     key_env="SY_TEST_ANTHROPIC_KEY"),
            provider("globex-vllm", "vllm", fakes.vllm.url, organization="globex"),
        ],
        [
            model("gpt-4o-mini", "openai", **PRICES),
            model("claude", "anthropic", "claude-haiku-4-5", **PRICES),
            model("globex-chat", "globex-vllm", "meta-llama/Llama-3.1-8B-Instruct",
                  organization="globex", **PRICES),
        ],
        routing={"breaker": {"failureThreshold": 2, "cooldownSeconds": 300}},
    )  # fmt: skip
    doc["apiKeys"] = [
        {"name": name, "sha256": sha(key), "organization": org, "scopes": scopes}
        for name, (key, org, scopes) in KEYS.items()
    ]
    doc["budgets"] = [
        {"dailyUsd": "5.00", "monthlyUsd": "400.00"},
        {"apiKey": "batch", "dailyUsd": "1.50"},
    ]
    return doc


def cents(amount: str) -> str:
    """What the console shows for a decimal amount of dollars: rounded half up to the cent."""
    return f"${Decimal(amount).quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"


def _history(today: date) -> list[Any]:
    """Four weeks of earlier usage for both organizations, with costs to the nano-dollar."""
    rng = random.Random(20)
    records = []
    for back in range(1, 29):
        day = datetime.combine(today - timedelta(days=back), time(12), UTC)
        for org, combos in (
            ("default", [("gpt-4o-mini", "openai"), ("claude", "anthropic")]),
            ("globex", [("globex-chat", "globex-vllm")]),
        ):
            keys = ["app", "batch"] if org == "default" else ["globex-app"]
            for (name, prov), key in [(c, k) for c in combos for k in keys]:
                for i in range(rng.randint(0, 5)):
                    error = rng.random() < 0.08
                    hit = not error and rng.random() < 0.2
                    records.append(
                        usage_record(
                            organization=org,
                            api_key=key,
                            provider=prov,
                            model=name,
                            task_type=rng.choice(["summarize", "chat", "code"]),
                            prompt_tokens=rng.randint(10, 4000),
                            completion_tokens=rng.randint(5, 900),
                            input_cost=Decimal(rng.randint(1, 90_000_000)) / NANO,
                            output_cost=Decimal(rng.randint(1, 400_000_000)) / NANO,
                            latency_ms=rng.uniform(150, 4000),
                            status="error" if error else "ok",
                            http_status=502 if error else 200,
                            error_class="upstream_error" if error else None,
                            cache_hit=hit,
                            saved_cost=Decimal(rng.randint(1, 300_000_000)) / NANO
                            if hit
                            else Decimal(0),
                            requested_at=day + timedelta(minutes=7 * i),
                        )
                    )
    return records


async def _seed(router: RouterServer, database_url: str | None, records: list[Any]) -> None:
    """Written by a store of the test's own on the router's database, as another replica's
    usage writer would."""
    store = (
        PostgresStore(database_url)
        if database_url
        else SQLiteStore(router.sqlite_path, writer_process=False)
    )
    await store.open()
    try:
        await store.write_usage(records)
    finally:
        await store.close()


def _usage(router: RouterServer, key: str, **params: str) -> dict[str, Any]:
    r = httpx.get(
        f"{router.url}/api/v1/llm/usage",
        params=params,
        headers={"Authorization": f"Bearer {_key(key)}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_requests(router: RouterServer, key: str, start: str, expected: int) -> None:
    for _ in range(200):
        if _usage(router, key, startDate=start)["totals"]["requests"] >= expected:
            return
        time_module.sleep(0.05)
    raise AssertionError(f"{expected} requests were not stored")


@pytest.fixture
def console(
    fakes: Fakes, collector: Collector, database_url: str | None, tmp_path: Path
) -> Iterator[tuple[RouterServer, dict[str, Any]]]:
    path = tmp_path / "table.yaml"
    write_table(path, _table(fakes))
    router = RouterServer(
        path, database_url=database_url, tracing=TraceConfig(collector.endpoint, 0.0)
    ).start()
    today = datetime.now(UTC).date()
    # Playwright's synchronous API holds an event loop on this thread: the store's
    # coroutines run on a thread of their own.
    seeding = threading.Thread(
        target=asyncio.run, args=(_seed(router, database_url, _history(today)),)
    )
    seeding.start()
    seeding.join()

    def chat(key: str, model_name: str, traceparent: str | None = None) -> None:
        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key=_key(key), max_retries=0)
        headers = {"traceparent": traceparent} if traceparent else None
        client.chat.completions.create(
            model=model_name,
            messages=[{"role": "user", "content": f"Summarize item {secrets.token_hex(4)}."}],
            max_tokens=40,
            extra_headers=headers,
        )

    for key, name in (
        [("app", "gpt-4o-mini")] * 3
        + [("app", "claude")] * 2
        + [("batch", "gpt-4o-mini")] * 2
        + [("globex-app", "globex-chat")]
    ):
        chat(key, name)
    # Two calls that fail, each under a client's sampled trace: the breaker opens.
    fakes.openai.set_default(Fault.error(503, message="the fake is overloaded"))
    failed_traces = []
    for _ in range(2):
        trace_id = secrets.token_hex(16)
        with pytest.raises(openai.APIStatusError):
            chat("app", "gpt-4o-mini", f"00-{trace_id}-{secrets.token_hex(8)}-01")
        failed_traces.append(trace_id)
    fakes.openai.set_default(None)
    _wait_requests(router, "reader", today.isoformat(), 9)
    _wait_requests(router, "globex-reader", today.isoformat(), 1)
    yield router, {"failed_traces": failed_traces, "today": today}
    router.stop()


class Console:
    """One browser tab on the console, failing the test on any script error or any
    request that leaves the router."""

    def __init__(self, browser: Any, router: RouterServer) -> None:
        self.router = router
        self.context = browser.new_context(viewport={"width": 1360, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.elsewhere: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on(
            "request",
            lambda r: None if r.url.startswith(router.url + "/") else self.elsewhere.append(r.url),
        )

    def sign_in(self, key: str) -> None:
        self.page.goto(f"{self.router.url}/console")
        self.page.wait_for_selector("#login:not([hidden])")
        self.page.fill("#key", key)
        self._then("spend", lambda: self.page.click("button[type=submit]"))

    def _then(self, view: str, action: Any) -> None:
        self.page.evaluate("delete document.body.dataset.loaded")
        action()
        self.page.wait_for_selector(f"body[data-loaded={view}]", timeout=10_000)

    def view(self, name: str) -> None:
        self._then(name, lambda: self.page.click(f"nav a[data-view={name}]"))

    def choose(self, select: str, value: str) -> None:
        self._then("spend", lambda: self.page.select_option(select, value))

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector))

    def bars(self, selector: str) -> dict[str, str]:
        return {
            str(row.get_attribute("data-key")): str(row.query_selector(".figure").inner_text())
            for row in self.page.query_selector_all(f"{selector} .row")
        }

    def shoot(self, name: str, shots: Path) -> None:
        path = shots / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000

    def close(self) -> None:
        assert not self.errors, self.errors
        assert not self.elsewhere, f"the page reached beyond the router: {self.elsewhere}"
        self.context.close()


def _shots(tmp_path: Path, database_url: str | None) -> Path:
    given = os.environ.get("SWITCHYARD_CONSOLE_SCREENSHOTS")
    if given and not database_url:  # one set: the views look the same on both stores
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    return tmp_path


def test_a_reader_sees_its_spend_to_the_cent_its_health_and_its_failures(
    browser: Any,
    console: tuple[RouterServer, dict[str, Any]],
    collector: Collector,
    database_url: str | None,
    tmp_path: Path,
) -> None:
    router, made = console
    shots = _shots(tmp_path, database_url)
    today = made["today"]
    start = (today - timedelta(days=29)).isoformat()  # the console's "last 30 days"
    tab = Console(browser, router)
    tab.sign_in(_key("reader"))
    assert tab.text("#who") == "Organization default"

    by_model = _usage(router, "reader", startDate=start, groupBy="model")
    assert by_model["totals"]["requests"] > 100  # the history and today's
    assert tab.text("#total-cost") == cents(by_model["totals"]["cost"])
    assert tab.text("#total-requests") == f"{by_model['totals']['requests']:,}"
    assert tab.bars("#groups") == {g["key"]: cents(g["cost"]) for g in by_model["groups"]}
    assert set(tab.bars("#groups")) == {"gpt-4o-mini", "claude"}
    hits, requests = by_model["totals"]["cacheHits"], by_model["totals"]["requests"]
    assert tab.text("#cache-hit-rate") == f"{100 * hits / requests:.1f}%"
    assert tab.text("#saved-cost") == cents(by_model["totals"]["savedCost"]) != "$0.00"
    # The plots: a column per day, stacked by model.
    assert len(tab.page.query_selector_all("#cost-chart svg rect")) >= 28
    tab.shoot("spend", shots)

    tab.choose("#by", "apiKey")
    by_key = _usage(router, "reader", startDate=start, groupBy="apiKey")
    assert tab.bars("#groups") == {g["key"]: cents(g["cost"]) for g in by_key["groups"]}
    assert set(tab.bars("#groups")) == {"app", "batch"}

    tab.view("health")
    cards = {
        str(c.get_attribute("data-provider")): c.inner_text()
        for c in tab.page.query_selector_all("#providers .card")
    }
    assert set(cards) == {"openai", "anthropic"}
    status = {
        name: tab.text(f".card[data-provider={name}] .chip.status")
        for name in ("openai", "anthropic")
    }
    assert status["openai"].lower() == "unhealthy"
    assert status["anthropic"].lower() != "unhealthy"
    assert "Breaker\nopen (2 failures in a row)" in cards["openai"]
    assert "HTTP 503" in cards["openai"] and "the fake is overloaded" in cards["openai"]
    assert "Breaker\nclosed" in cards["anthropic"]
    today_cost = _usage(router, "reader", startDate=today.isoformat())["totals"]["cost"]
    budgets = tab.bars("#budgets")
    assert budgets["organization/day"] == f"{cents(today_cost)} of $5.00"
    assert budgets["organization/month"].endswith(" of $400.00")
    batch_today = _usage(router, "reader", startDate=today.isoformat(), groupBy="apiKey")
    [batch] = [g for g in batch_today["groups"] if g["key"] == "batch"]
    assert budgets["batch/day"] == f"{cents(batch['cost'])} of $1.50"
    tab.shoot("health", shots)

    tab.view("requests")
    failed = tab.page.query_selector_all("#failed tbody tr")
    shown = {str(row.query_selector(".trace").inner_text()) for row in failed}
    assert shown == set(made["failed_traces"])
    # Each trace id shown is a trace the collector received from the router.
    received = collector.wait_for(
        "the failed requests' traces",
        lambda spans: set(made["failed_traces"]) <= {s.trace_id for s in spans},
    )
    assert received
    slow = [
        float(v.split()[0]) * (1000 if v.endswith(" s") else 1)
        for v in tab.bars("#slowest").values()
    ]
    assert len(slow) == 9  # today's requests of this organization, failed ones too
    assert slow == sorted(slow, reverse=True)
    tab.shoot("requests", shots)
    tab.close()


def test_another_organization_sees_none_of_it(
    browser: Any, console: tuple[RouterServer, dict[str, Any]]
) -> None:
    router, made = console
    start = (made["today"] - timedelta(days=29)).isoformat()
    tab = Console(browser, router)
    tab.sign_in(_key("globex-reader"))
    assert tab.text("#who") == "Organization globex"
    mine = _usage(router, "globex-reader", startDate=start, groupBy="model")
    assert tab.text("#total-cost") == cents(mine["totals"]["cost"])
    assert set(tab.bars("#groups")) == {"globex-chat"}
    theirs = _usage(router, "reader", startDate=start)["totals"]
    assert tab.text("#total-requests") != f"{theirs['requests']:,}"
    tab.choose("#by", "apiKey")
    assert set(tab.bars("#groups")) == {"globex-app"}
    page_text = tab.text("body")
    for name in ("gpt-4o-mini", "claude", "batch", "openai", "anthropic"):
        assert name not in page_text
    tab.view("health")
    assert [c.get_attribute("data-provider") for c in tab.page.query_selector_all(".card")] == [
        "globex-vllm"
    ]
    assert "No budgets" in tab.text("#budgets")
    tab.view("requests")
    assert "No failed requests" in tab.text("#failed")
    assert len(tab.bars("#slowest")) == 1
    for trace_id in made["failed_traces"]:
        assert trace_id not in tab.text("body")
    tab.close()


def test_keys_that_may_not_read_usage_are_told_why(
    browser: Any, console: tuple[RouterServer, dict[str, Any]]
) -> None:
    router, _ = console
    tab = Console(browser, router)
    tab.page.goto(f"{router.url}/console")
    tab.page.fill("#key", _key("app"))
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("#login-error:has-text('usage:read')")
    assert tab.page.is_hidden("#view-spend")
    tab.page.fill("#key", "sy-not-a-key")
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("#login-error:has-text('invalid API key')")
    # The browser reported both refusals as errors; nothing else went wrong.
    tab.errors = [e for e in tab.errors if "401" not in e and "403" not in e]
    tab.close()


def test_a_providers_replicas_show_on_its_card(browser: Any, router: Any) -> None:
    """A provider with endpoints: each one's state, load and picks on the health view,
    the one that cannot be reached shown out, and why."""
    from tests.fakes.model_server import FakeModelServer
    from tests.support.tables import KEY, model, provider, table

    alive, dead = FakeModelServer().start(), FakeModelServer().start()
    dead.stop()
    try:
        addresses = [f"127.0.0.1:{alive.port}", f"127.0.0.1:{dead.port}"]
        gw = router(
            table(
                [provider("pool", "vllm", "http://pool.invalid:8000/v1", endpoints=addresses)],
                [model("llama", "pool", FakeModelServer.default_models[0])],
            )
        )
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
        for i in range(4):
            client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4
            )
        tab = Console(browser, gw)
        tab.sign_in(KEY)

        def rows() -> dict[str, str]:
            if tab.page.evaluate("document.body.dataset.loaded") == "health":
                tab.view("spend")  # the health view loads again only when chosen again
            tab.view("health")
            return {
                str(r.get_attribute("data-endpoint")): r.inner_text()
                for r in tab.page.query_selector_all(
                    ".card[data-provider=pool] table.endpoints tbody tr"
                )
            }

        # The dead one is out for 1 s, then 2, 4, ...; each time its time out ends, the
        # next scrape (every 0.25 s) puts it out again. A view in that gap shows it in:
        # look again, as a reader would.
        seen = rows()
        deadline = time_module.monotonic() + 10
        while "out (" not in seen.get(addresses[1], "") and time_module.monotonic() < deadline:
            time_module.sleep(0.1)
            seen = rows()
        assert set(seen) == set(addresses)
        assert "\tin\t" in seen[addresses[0]] and "\t4\t" in seen[addresses[0]]
        assert "out (" in seen[addresses[1]] and "cannot" in seen[addresses[1]]
        assert "Breaker\nclosed" in tab.text(".card[data-provider=pool]")
        tab.close()
    finally:
        alive.stop()
