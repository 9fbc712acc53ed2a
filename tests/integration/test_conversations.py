"""Kept conversations bounded by what is sent: Responses API answers (``store``) and
Anthropic message threads stored a turn at a time, capped, read only as asked, and private
to their organization, on SQLite and on PostgreSQL, through the official SDKs."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest

from switchyard.router.core.caller import Caller
from switchyard.router.storage.factory import make_store
from switchyard.router.storage.records import utcnow
from switchyard.router.storage.sqlite import SQLiteStore
from tests.fakes import Fault
from tests.integration.conftest import Fakes, five_models, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, OTHER_ORG_KEY, table

Start = Callable[..., RouterServer]


def oai(gw: RouterServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def ant(gw: RouterServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def sql(gw: RouterServer, database_url: str | None, query: str) -> list[tuple[Any, ...]]:
    """A query on the router's own store, whichever it is."""
    if database_url is None:
        with sqlite3.connect(gw.state_dir / "switchyard.db") as conn:
            return conn.execute(query).fetchall()
    with psycopg.connect(database_url) as pg:
        cur = pg.execute(query)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def doc(fakes: Fakes, context_window: int = 1_000_000, **routing: Any) -> dict[str, Any]:
    models = [m | {"contextWindow": context_window} for m in five_models()]
    return table(five_providers(fakes), models, routing=routing or None)


@pytest.fixture
def stored(fakes: Fakes, stored_router: Start) -> RouterServer:
    return stored_router(doc(fakes))


# -- stored once --------------------------------------------------------------------
def test_each_turn_is_stored_once(
    stored: RouterServer, database_url: str | None, fakes: Fakes
) -> None:
    """Twelve turns of 20 KB each keep about 12 times 40 KB (the input and its echo), not
    the 1.5 MB that storing every turn's whole conversation again would."""
    c = oai(stored)
    previous = None
    for i in range(12):
        made = c.responses.create(
            model="gpt-4o-mini", input=f"turn {i} " + "x" * 20_000, previous_response_id=previous
        )
        previous = made.id
    # The twelfth turn's provider got the whole conversation.
    assert len(fakes.openai.requests[-1].body["messages"]) == 23
    [(turns, stored_bytes)] = sql(
        stored,
        database_url,
        "SELECT count(*), sum(length(answer) + length(items)) FROM llm_turns",
    )
    assert turns == 12
    assert 12 * 40_000 < stored_bytes < 12 * 45_000
    # What the listing shows is still the whole conversation.
    items = list(c.responses.input_items.list(previous, order="asc", limit=100))
    assert len(items) == 23 and items[0].content[0].text.startswith("turn 0 ")  # type: ignore[union-attr]


def test_a_thread_is_stored_a_turn_at_a_time(
    stored: RouterServer, database_url: str | None, fakes: Fakes
) -> None:
    client = ant(stored)
    previous: dict[str, Any] = {"type": "create"}
    for i in range(10):
        reply = client.beta.messages.create(
            model="claude",
            max_tokens=50,
            messages=[{"role": "user", "content": f"turn {i} " + "y" * 20_000}],
            thread=previous,  # type: ignore[arg-type]
        )
        previous = {"type": "continue", "previous_message_id": reply.id}
    assert len(fakes.anthropic.requests[-1].body["messages"]) == 19
    [(stored_bytes,)] = sql(
        stored, database_url, "SELECT sum(length(answer) + length(items)) FROM llm_turns"
    )
    assert 10 * 40_000 < stored_bytes < 10 * 45_000


def test_deleting_a_response_removes_its_content(
    stored: RouterServer, database_url: str | None
) -> None:
    c = oai(stored)
    first = c.responses.create(model="gpt-4o-mini", input="The secret is swordfish.")
    second = c.responses.create(
        model="gpt-4o-mini", input="Remember it.", previous_response_id=first.id
    )
    c.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(first.id)
    rows = sql(stored, database_url, "SELECT answer, items FROM llm_turns")
    assert not any(b"swordfish" in bytes(cell or b"") for row in rows for cell in row)
    # A later turn cannot be continued without it, and says why.
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="gpt-4o-mini", input="And?", previous_response_id=second.id)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "deleted" in err.value.body["message"]  # type: ignore[index]
    # Once nothing points at it, its marker goes with the last turn.
    c.responses.delete(second.id)
    assert sql(stored, database_url, "SELECT count(*) FROM llm_turns") == [(1,)]
    assert purge(stored, database_url) == 1
    assert sql(stored, database_url, "SELECT count(*) FROM llm_turns") == [(0,)]


def purge(gw: RouterServer, database_url: str | None) -> int:
    """The hourly purge, now, through a store of its own on the router's database."""

    async def run() -> int:
        store = make_store(database_url, gw.state_dir / "switchyard.db")
        if isinstance(store, SQLiteStore):
            store.writer_process = False
        await store.open()
        try:
            return await store.turn_purge(utcnow())
        finally:
            await store.close()

    return asyncio.run(run())


# -- bounded by what is sent -----------------------------------------------------------
def test_unknown_fields_inside_content_blocks_are_refused(gateway: RouterServer) -> None:
    """As Anthropic refuses them: otherwise a thread would keep megabytes that count for
    nothing and reach the provider."""
    pad = "p" * 10_000
    for where, messages in (
        (
            "messages[0].content[0].pad",
            [{"role": "user", "content": [{"type": "text", "text": "hi", "pad": pad}]}],
        ),
        ("messages[0].pad", [{"role": "user", "content": "hi", "pad": pad}]),
        (
            "messages[0].content[0].source.pad",
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x.example/a.png", "pad": pad},
                        }
                    ],
                }
            ],
        ),
    ):
        r = httpx.post(
            f"{gateway.url}/v1/messages",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            json={
                "model": "claude",
                "max_tokens": 10,
                "messages": messages,
                "thread": {"type": "create"},
            },
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == where
        assert "not a known field" in r.json()["error"]["message"]
    # The fields Anthropic documents pass, and reach an Anthropic provider as sent.
    ok = ant(gateway).messages.create(
        model="claude",
        max_tokens=10,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    )
    assert ok.content


def test_a_conversation_is_capped_in_bytes(
    fakes: Fakes, stored_router: Start, database_url: str | None
) -> None:
    gw = stored_router(doc(fakes, maxStoredConversationBytes=80_000))
    c = oai(gw)
    first = c.responses.create(model="gpt-4o-mini", input="a" * 30_000)
    sent = fakes.openai.completions
    # Its input and its echo hold 60 KB: 30 KB more would pass the limit.
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="gpt-4o-mini", input="b" * 30_000, previous_response_id=first.id)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "maxStoredConversationBytes" in err.value.body["message"]  # type: ignore[index]
    assert fakes.openai.completions == sent  # refused before anything was spent
    # A first turn larger than the limit is refused as well, naming its input ...
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="gpt-4o-mini", input="c" * 120_000)
    assert err.value.body["param"] == "input"  # type: ignore[index]
    # ... unless it asks not to be kept.
    assert c.responses.create(model="gpt-4o-mini", input="c" * 120_000, store=False).output_text
    # A thread is capped alike.
    client = ant(gw)
    reply = client.beta.messages.create(
        model="claude",
        max_tokens=10,
        messages=[{"role": "user", "content": "d" * 60_000}],
        thread={"type": "create"},
    )
    with pytest.raises(anthropic.BadRequestError) as aerr:
        client.beta.messages.create(
            model="claude",
            max_tokens=10,
            messages=[{"role": "user", "content": "e" * 10_000}],
            thread={"type": "continue", "previous_message_id": reply.id},
        )
    assert aerr.value.body["error"]["field"] == "thread.previous_message_id"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as aerr:
        client.beta.messages.create(
            model="claude",
            max_tokens=10,
            messages=[{"role": "user", "content": "f" * 120_000}],
            thread={"type": "create"},
        )
    assert aerr.value.body["error"]["field"] == "messages"  # type: ignore[index]


PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


def test_images_thinking_and_tool_schemas_count_against_the_context_window(
    fakes: Fakes, router: Any
) -> None:
    """The context-window check counts what the model reads, not only text: a thread of
    images, of thinking blocks, or of large tool schemas is refused once no window holds
    it."""
    gw = router(doc(fakes, context_window=6_000))
    client = ant(gw)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    reply = client.beta.messages.create(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": [image, image, {"type": "text", "text": "two"}]}],
        thread={"type": "create"},
    )
    with pytest.raises(anthropic.BadRequestError) as err:
        client.beta.messages.create(
            model="claude",
            max_tokens=100,
            messages=[
                {"role": "user", "content": [image, image, {"type": "text", "text": "more"}]}
            ],
            thread={"type": "continue", "previous_message_id": reply.id},
        )
    assert "context window" in err.value.body["error"]["message"]  # type: ignore[index]
    thinking = {"type": "thinking", "thinking": "t" * 18_000, "signature": "sig"}
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [thinking, {"type": "text", "text": "a"}]},  # type: ignore[list-item]
                {"role": "user", "content": "again"},
            ],
        )
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "d" * 100} for i in range(200)},
    }
    with pytest.raises(openai.BadRequestError):
        oai(gw).responses.create(
            model="gpt-4o-mini",
            input="call it",
            tools=[{"type": "function", "name": "big", "parameters": schema}],  # type: ignore[list-item]
        )


def test_responses_metadata_is_bounded_as_openai_bounds_it(gateway: RouterServer) -> None:
    c = oai(gateway)
    assert c.responses.create(
        model="gpt-4o-mini", input="hi", metadata={f"k{i}": "v" * 512 for i in range(16)}
    ).metadata
    for metadata in (
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ):
        with pytest.raises(openai.BadRequestError) as err:
            c.responses.create(model="gpt-4o-mini", input="hi", metadata=metadata)
        assert str(err.value.body["param"]).startswith("metadata")  # type: ignore[index]


# -- read only what is asked -----------------------------------------------------------
def test_a_kept_answer_is_read_without_its_conversation(
    stored: RouterServer, database_url: str | None
) -> None:
    """``GET /v1/responses/{id}`` reads the answer alone: with the turns' input made
    unreadable in the store it still answers, while the listing of input items, which
    does read them, cannot."""
    c = oai(stored)
    first = c.responses.create(model="gpt-4o-mini", input="one")
    second = c.responses.create(model="gpt-4o-mini", input="two", previous_response_id=first.id)
    value = "'\\x7b'::bytea" if database_url else "X'7b'"
    sql(stored, database_url, f"UPDATE llm_turns SET items = {value}")
    assert c.responses.retrieve(second.id).output_text == "Echo: two"
    r = httpx.get(
        f"{stored.url}/v1/responses/{second.id}/input_items",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 500


def test_lookups_take_the_keys_in_flight_slot(fakes: Fakes, router: Any) -> None:
    gw = router(doc(fakes, maxInFlightPerKey=1))
    c = oai(gw)
    made = c.responses.create(model="gpt-4o-mini", input="keep me")
    fakes.openai.push(Fault.stall(2.0))
    holder = threading.Thread(
        target=lambda: c.responses.create(model="gpt-4o-mini", input="slow", store=False)
    )
    holder.start()
    deadline = time.monotonic() + 5
    while gw.services.in_flight.held(Caller("test", "default", frozenset())) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for call in (
        lambda: c.responses.retrieve(made.id),
        lambda: c.responses.input_items.list(made.id),
        lambda: c.responses.delete(made.id),
    ):
        with pytest.raises(openai.RateLimitError) as err:
            call()
        assert err.value.body["code"] == "too_many_in_flight"  # type: ignore[index]
    holder.join()
    assert c.responses.retrieve(made.id).id == made.id


# -- threads keep what the SDK leaves out ------------------------------------------------
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("name", ["claude", "gpt-4o-mini", "ollama-llama"])
def test_a_thread_keeps_its_system_prompt_and_tools(
    stored: RouterServer, fakes: Fakes, name: str
) -> None:
    """The anthropic SDK sends ``system`` and ``tools`` only when it creates a thread:
    every later turn reaches the provider with them, and with its own ``tool_choice``."""
    client = ant(stored)
    first = client.beta.messages.create(
        model="claude",
        max_tokens=50,
        system="You are terse.",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Hello"}],
        thread={"type": "create"},
    )
    second = client.beta.messages.create(
        model=name,
        max_tokens=50,
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "And the weather in Paris?"}],
        thread={"type": "continue", "previous_message_id": first.id},
    )
    assert second.stop_reason == "tool_use"
    sent = (
        {
            "claude": fakes.anthropic,
            "gpt-4o-mini": fakes.openai,
            "ollama-llama": fakes.ollama,
        }[name]
        .requests[-1]
        .body
    )
    if name == "claude":
        assert sent["system"] == "You are terse."
        assert [t["name"] for t in sent["tools"]] == ["get_weather"]
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    else:
        assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
        assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
        if name == "gpt-4o-mini":
            assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    # A continuing turn may not change them: the thread keeps what it was created with.
    for field, value in (("system", "Be verbose."), ("tools", [WEATHER_TOOL])):
        with pytest.raises(anthropic.BadRequestError) as err:
            client.beta.messages.create(
                model="claude",
                max_tokens=50,
                messages=[{"role": "user", "content": "?"}],
                thread={"type": "continue", "previous_message_id": second.id},
                **{field: value},  # type: ignore[arg-type]
            )
        assert err.value.body["error"]["field"] == field  # type: ignore[index]


# -- the store's errors never turn a paid answer into a 500 ------------------------------
def test_nul_characters_are_kept_and_bad_ids_are_not_found(
    stored: RouterServer, fakes: Fakes
) -> None:
    c = oai(stored)
    made = c.responses.create(model="gpt-4o-mini", input="a\u0000b")
    assert made.output_text == "Echo: a\u0000b"
    assert c.responses.retrieve(made.id).output_text == "Echo: a\u0000b"
    with c.responses.stream(model="gpt-4o-mini", input="c\u0000d") as s:
        for _ in s:
            pass
        final = s.get_final_response()
    assert c.responses.retrieve(final.id).output_text == "Echo: c\u0000d"
    follow = c.responses.create(model="gpt-4o-mini", input="more", previous_response_id=final.id)
    assert fakes.openai.requests[-1].body["messages"][0]["content"] == "c\u0000d"
    assert follow.status == "completed"
    sent = fakes.openai.completions
    for bad in ("resp_\u0000", "resp_" + "0" * 31 + "\u0000", "x" * 128):
        with pytest.raises(openai.NotFoundError) as err:
            c.responses.create(model="gpt-4o-mini", input="hi", previous_response_id=bad)
        assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert fakes.openai.completions == sent
    for path in ("resp_%00", "resp_" + "0" * 31 + "%00", "%00"):
        for method in ("GET", "DELETE"):
            r = httpx.request(
                method,
                f"{stored.url}/v1/responses/{path}",
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert r.status_code == 404, (method, path, r.text)
    thread = ant(stored).beta.messages.create(
        model="claude",
        max_tokens=20,
        messages=[{"role": "user", "content": "e\u0000f"}],
        thread={"type": "create"},
    )
    with pytest.raises(anthropic.NotFoundError):
        ant(stored).beta.messages.create(
            model="claude",
            max_tokens=20,
            messages=[{"role": "user", "content": "?"}],
            thread={"type": "continue", "previous_message_id": thread.id + "\u0000"},
        )


def test_a_stopped_database_serves_the_answer_unkept(
    fakes: Fakes, router: Any, tmp_path: Any
) -> None:
    """On PostgreSQL, the chart's default store: the answer was paid for, so it is served
    (saying ``store: false``) and the outage is logged, without a 500 and without holding
    every answer for the store's timeout."""
    from tests.integration.conftest import fresh_database
    from tests.support.postgres import PostgresServer
    from tests.support.servers import RouterServer as Server
    from tests.support.servers import write_table

    db = PostgresServer().start()
    try:
        path = tmp_path / "table.yaml"
        write_table(path, doc(fakes))
        gw = Server(path, database_url=fresh_database(db), state_dir=tmp_path / "state").start()
        try:
            c = oai(gw)
            assert c.responses.create(model="gpt-4o-mini", input="before").store is True
            db.stop()
            took = []
            for i in range(3):
                started = time.monotonic()
                made = c.responses.create(model="gpt-4o-mini", input=f"during {i}")
                took.append(time.monotonic() - started)
                assert made.output_text == f"Echo: during {i}"
                assert made.store is False
            with c.responses.stream(model="gpt-4o-mini", input="streamed") as s:
                events = [e.type for e in s]
            assert events[-1] == "response.completed"
            assert took[1] < 1 and took[2] < 1  # the first found the store down; the rest skip it
            metrics = httpx.get(f"{gw.admin}/metrics").text
            assert 'switchyard_conversation_turns_not_kept_total{reason="unavailable"}' in metrics
            with pytest.raises(openai.InternalServerError) as err:
                c.responses.retrieve(made.id)
            assert err.value.status_code == 503
        finally:
            gw.stop()
    finally:
        db.destroy()


# -- private to their organization, on both stores ---------------------------------------
def test_kept_conversations_are_private_to_their_organization(stored: RouterServer) -> None:
    made = oai(stored).responses.create(model="gpt-4o-mini", input="Ours")
    other = oai(stored, OTHER_ORG_KEY)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as err:
        other.responses.create(model="gpt-4o-mini", input="hi", previous_response_id=made.id)
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
    thread = ant(stored).beta.messages.create(
        model="claude",
        max_tokens=20,
        messages=[{"role": "user", "content": "Secret"}],
        thread={"type": "create"},
    )
    with pytest.raises(anthropic.NotFoundError):
        ant(stored, OTHER_ORG_KEY).beta.messages.create(
            model="claude",
            max_tokens=20,
            messages=[{"role": "user", "content": "?"}],
            thread={"type": "continue", "previous_message_id": thread.id},
        )
    # A thread's answer is no Responses API answer, nor the other way round.
    with pytest.raises(openai.NotFoundError):
        oai(stored).responses.retrieve(thread.id)
    # Still ours, untouched.
    assert oai(stored).responses.retrieve(made.id).output_text == "Echo: Ours"
    oai(stored).responses.delete(made.id)
