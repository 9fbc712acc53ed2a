"""The official SDKs' own typed helpers, streaming and not, across protocols: the
openai SDK's ``responses.parse`` with a pydantic model, and the anthropic SDK's tool
runner with a ``@beta_tool`` function."""

from __future__ import annotations

import anthropic
import openai
import pytest
from anthropic import beta_tool
from pydantic import BaseModel

from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY


class Place(BaseModel):
    city: str
    country: str


@pytest.mark.parametrize("name", ["gpt-4o-mini", "claude", "ollama-llama"])
def test_responses_parse_gives_the_pydantic_object(gateway: RouterServer, name: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    done = client.responses.parse(
        model=name, input="Where is the Eiffel tower in Paris?", text_format=Place
    )
    assert isinstance(done.output_parsed, Place) and done.output_parsed.city == "Paris"
    with client.responses.stream(
        model=name, input="Where is the Eiffel tower in Paris?", text_format=Place
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, Place)


CALLS: list[str] = []


@beta_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    CALLS.append(city)
    return f"18C and sunny in {city}"


@pytest.mark.parametrize("name", ["claude", "gpt-4o-mini", "ollama-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_anthropic_tool_runner_runs_the_tool_and_answers(
    gateway: RouterServer, fakes: Fakes, name: str, stream: bool
) -> None:
    CALLS.clear()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    runner = client.beta.messages.tool_runner(
        model=name,
        max_tokens=200,
        tools=[get_weather],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        stream=stream,
    )
    if stream:
        for message_stream in runner:
            for _ in message_stream:
                pass
    else:
        for _ in runner:
            pass
    final = runner.until_done()
    assert CALLS == ["Paris"]
    assert final.stop_reason == "end_turn"
    assert any(block.type == "text" for block in final.content)


@pytest.mark.parametrize("name", ["claude", "gpt-4o-mini"])
def test_a_message_thread_is_held_by_the_router(
    gateway: RouterServer, fakes: Fakes, name: str
) -> None:
    """``thread``: the next turn sends only itself; the provider gets the whole
    conversation, whichever provider answered the turn before."""
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    first = client.beta.messages.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "My name is Ada."}],
        thread={"type": "create"},
    )
    second = client.beta.messages.create(
        model=name,
        max_tokens=50,
        messages=[{"role": "user", "content": "What is my name?"}],
        thread={"type": "continue", "previous_message_id": first.id},
    )
    fake = fakes.anthropic if name == "claude" else fakes.openai
    said = [
        m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
        for m in fake.requests[-1].body["messages"]
        if m["role"] != "system"
    ]
    assert said == ["My name is Ada.", "Echo: My name is Ada.", "What is my name?"]
    assert "thread" not in fake.requests[-1].body
    # The thread goes on from the latest answer.
    client.beta.messages.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "Again?"}],
        thread={"type": "continue", "previous_message_id": second.id},
    )
    assert len(fakes.anthropic.requests[-1].body["messages"]) == 5


def test_a_thread_is_private_to_its_organization(gateway: RouterServer) -> None:
    from tests.support.tables import OTHER_ORG_KEY

    ours = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    first = ours.beta.messages.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "Secret"}],
        thread={"type": "create"},
    )
    theirs = anthropic.Anthropic(base_url=gateway.url, api_key=OTHER_ORG_KEY, max_retries=0)
    for key_client in (theirs, ours):
        with pytest.raises(anthropic.NotFoundError) as err:
            key_client.beta.messages.create(
                model="claude",
                max_tokens=50,
                messages=[{"role": "user", "content": "?"}],
                thread={
                    "type": "continue",
                    "previous_message_id": first.id if key_client is theirs else "msg_nope",
                },
            )
        assert "previous_message_id" in str(err.value.body)
