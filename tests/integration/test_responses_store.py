"""Kept Responses API answers: ``store``, ``previous_response_id``, ``GET``/``DELETE
/v1/responses/{id}`` and its input items, through the official openai SDK, on SQLite and
on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.integration.conftest import Fakes, five_models, five_providers
from tests.integration.test_responses_api import WEATHER
from tests.support.servers import RouterServer
from tests.support.tables import KEY, table

Start = Callable[[dict[str, Any]], RouterServer]


def client(gw: RouterServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def stored(fakes: Fakes, stored_router: Start) -> RouterServer:
    return stored_router(table(five_providers(fakes), five_models()))


def test_a_conversation_continues_on_another_provider(stored: RouterServer, fakes: Fakes) -> None:
    c = client(stored)
    first = c.responses.create(
        model="gpt-4o-mini", instructions="Only for the first turn.", input="My name is Ada."
    )
    assert first.store is True
    second = c.responses.create(
        model="claude", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    sent = fakes.anthropic.requests[-1].body
    # The first turn, its answer, then the new question; earlier instructions stay behind.
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("user", "My name is Ada."),
        ("assistant", "Echo: My name is Ada."),
        ("user", "What is my name?"),
    ]
    assert "system" not in sent
    third = c.responses.create(
        model="ollama-llama", input="And again?", previous_response_id=second.id
    )
    assert third.status == "completed"
    said = [m["content"] for m in fakes.ollama.requests[-1].body["messages"]]
    assert said == [
        "My name is Ada.",
        "Echo: My name is Ada.",
        "What is my name?",
        "Echo: What is my name?",
        "And again?",
    ]
    items = list(c.responses.input_items.list(third.id, order="asc"))
    assert [i.type for i in items] == ["message"] * 4 + ["message"]
    assert all(i.id for i in items) and len({i.id for i in items}) == 5


def test_kept_answers_are_read_back_listed_and_deleted(stored: RouterServer) -> None:
    c = client(stored)
    made = c.responses.create(model="gpt-4o-mini", input="Keep this", metadata={"k": "v"})
    got = c.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    page = c.responses.input_items.list(made.id)
    assert [i.type for i in page.data] == ["message"]
    assert page.data[0].content[0].text == "Keep this"  # type: ignore[union-attr]
    deleted = c.responses.delete(made.id)
    assert deleted is None  # the SDK returns nothing for a 200 with a deletion body
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.retrieve(made.id)
    assert made.id in err.value.body["message"]  # type: ignore[index]


def test_a_streamed_answer_is_kept_before_its_last_event(stored: RouterServer) -> None:
    c = client(stored)
    with c.responses.stream(model="claude", input="Streamed and kept") as s:
        for _ in s:
            pass
        final = s.get_final_response()
    assert final.store is True
    got = c.responses.retrieve(final.id)
    assert got.output_text == "Echo: Streamed and kept"
    assert got.status == "completed"


def test_a_tool_loop_by_previous_response_id(stored: RouterServer, fakes: Fakes) -> None:
    """How the Agents SDK and others continue: only the tool's output is sent again."""
    c = client(stored)
    first = c.responses.create(
        model="gpt-4o-mini",
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    call = next(i for i in first.output if isinstance(i, ResponseFunctionToolCall))
    follow = c.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert follow.status == "completed"
    sent = fakes.openai.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}


def test_store_false_keeps_nothing(gateway: RouterServer) -> None:
    c = client(gateway)
    made = c.responses.create(model="gpt-4o-mini", input="Forget this", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(made.id)


def test_no_answer_is_kept_when_the_table_says_zero_days(fakes: Fakes, router: Any) -> None:
    gw = router(table(five_providers(fakes), five_models(), routing={"storedResponseDays": 0}))
    made = client(gw).responses.create(model="gpt-4o-mini", input="Nothing kept")
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client(gw).responses.retrieve(made.id)


def test_bad_listing_parameters_are_named(gateway: RouterServer) -> None:
    c = client(gateway)
    made = c.responses.create(model="gpt-4o-mini", input="List me")
    for query, param in (({"limit": 0}, "limit"), ({"order": "up"}, "order")):
        with pytest.raises(openai.BadRequestError) as err:
            c.responses.input_items.list(made.id, **query)  # type: ignore[arg-type]
        assert err.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.input_items.list(made.id, after="msg_nope")
    assert err.value.body["param"] == "after"  # type: ignore[index]
