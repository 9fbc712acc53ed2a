"""The response cache, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import psycopg

from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, OTHER_ORG_KEY, model, provider, table
from tests.support.usage_rows import wait_rows

AUTH = {"Authorization": f"Bearer {KEY}"}
Start = Callable[..., RouterServer]


def doc(fakes: Fakes, **cache: Any) -> dict[str, Any]:
    d = table(
        [
            provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
            provider(
                "other",
                "openai",
                fakes.openai.url,
                key_env="SY_TEST_OPENAI_KEY",
                organization="other",
            ),
        ],
        [
            model(
                "gpt",
                "openai",
                "gpt-4o-mini",
                inputPricePer1MTokens="2.5",
                outputPricePer1MTokens="10",
            ),
            model("gpt", "other", "gpt-4o-mini", organization="other"),
        ],
    )
    d["cache"] = cache
    return d


def ask(
    gw: RouterServer, key: str = KEY, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    payload = {"taskType": "code", "prompt": "what is a monad", "temperature": 0, **body}
    r = httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        json=payload,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_deterministic_request_is_answered_from_the_cache(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes))
    first = ask(gw)
    second = ask(gw)
    assert fakes.openai.completions == 1
    assert (first["cacheHit"], second["cacheHit"]) == (False, True)
    assert second["content"] == first["content"]
    assert second["usage"] == first["usage"]
    assert second["cost"]["total"] == "0"
    assert second["cost"]["saved"] == first["cost"]["total"]
    rows = wait_rows(database_url, gw.state_dir, 2)
    hit = next(r for r in rows if r["cache_hit"])
    assert hit["total_cost"] == 0 and hit["saved_cost"] == Decimal(first["cost"]["total"])
    report = httpx.get(f"{gw.url}/api/v1/llm/usage", headers=AUTH).json()["totals"]
    assert report["cacheHits"] == 1
    assert Decimal(report["savedCost"]) == Decimal(first["cost"]["total"])


def test_what_is_not_cached(fakes: Fakes, stored_router: Start) -> None:
    gw = stored_router(doc(fakes))
    for _ in range(2):
        ask(gw, temperature=0.7)  # not deterministic
        ask(gw, prompt="other", temperature=None)  # the provider default: not 0
    assert fakes.openai.completions == 4
    ask(gw, prompt="fresh", headers={"Cache-Control": "no-store"})
    ask(gw, prompt="fresh")
    assert fakes.openai.completions == 6  # no-store stored nothing
    ask(gw, prompt="fresh", headers={"Cache-Control": "no-cache"})
    assert fakes.openai.completions == 7  # no-cache skips the lookup ...
    assert ask(gw, prompt="fresh")["cacheHit"]  # ... but stores the answer


def test_per_task_settings(fakes: Fakes, stored_router: Start) -> None:
    gw = stored_router(doc(fakes, alwaysCacheTasks=["faq"], neverCacheTasks=["code"]))
    ask(gw, taskType="faq", temperature=0.9)
    assert ask(gw, taskType="faq", temperature=0.9)["cacheHit"]
    # Cacheable alike, and the same but for the temperature: another answer.
    assert not ask(gw, taskType="faq", temperature=0.5)["cacheHit"]
    assert ask(gw, taskType="faq", temperature=0.5)["cacheHit"]
    ask(gw, taskType="code")
    assert not ask(gw, taskType="code")["cacheHit"]


def test_organizations_do_not_share_answers(fakes: Fakes, stored_router: Start) -> None:
    gw = stored_router(doc(fakes))
    ask(gw, model="gpt")
    assert not ask(gw, key=OTHER_ORG_KEY, model="gpt")["cacheHit"]
    assert fakes.openai.completions == 2


def test_a_stream_is_served_from_the_cache_as_a_stream(fakes: Fakes, stored_router: Start) -> None:
    gw = stored_router(doc(fakes))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "tell me about streams"}]

    def run() -> tuple[str, Any, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt",
            messages=messages,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        cache = raw.headers["x-switchyard-cache"]
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[-1].usage, cache

    first = run()
    second = run()
    assert fakes.openai.completions == 1
    assert (first[2], second[2]) == ("miss", "hit")
    assert second[0] == first[0] == "Echo: tell me about streams"
    assert second[1].completion_tokens == first[1].completion_tokens
    # And a streamed answer serves a later non-streaming request.
    resp = client.chat.completions.with_raw_response.create(
        model="gpt", messages=messages, temperature=0
    )
    assert resp.headers["x-switchyard-cache"] == "hit"
    assert resp.parse().choices[0].message.content == first[0]


def test_the_cache_expires_and_is_purged(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes, ttlSeconds=1))
    ask(gw)
    assert ask(gw)["cacheHit"]
    time.sleep(1.1)
    assert not ask(gw)["cacheHit"]
    assert fakes.openai.completions == 2


def test_replicas_share_the_cache_through_the_database(
    fakes: Fakes, stored_router: Start, database_url: str | None, tmp_path: Any
) -> None:
    a = stored_router(doc(fakes))
    b = stored_router(doc(fakes), state_dir=tmp_path / "state-b", replica_of=a)
    ask(a)
    deadline = time.monotonic() + 5
    while not ask(b)["cacheHit"]:  # the write to the shared table is asynchronous
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(5.5)  # hit counts are flushed every few seconds
    query = "SELECT hit_count, last_hit_at FROM llm_response_cache"
    if database_url is None:
        with sqlite3.connect(a.sqlite_path) as db:
            row = db.execute(query).fetchone()
    else:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(query).fetchone()
    assert row is not None and row[0] >= 1 and row[1] is not None
