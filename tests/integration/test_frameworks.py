"""Two popular agent frameworks as clients, unchanged: the OpenAI Agents SDK (whose
default model speaks the Responses API) and pydantic-ai, each over both OpenAI APIs,
to providers of three protocols, with a tool round trip and streaming."""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.messages import ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.openai import OpenAIResponsesModel as PydanticResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.support.servers import RouterServer
from tests.support.tables import KEY

MODELS = ["gpt-4o-mini", "claude", "ollama-llama"]
set_tracing_disabled(True)  # nothing leaves the machine


def openai_client(gw: RouterServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny, 21C in {city}"


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("name", MODELS)
def test_openai_agents_sdk_calls_a_tool_and_answers(
    gateway: RouterServer, api: str, name: str
) -> None:
    kind = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    agent = Agent(
        name="weather",
        instructions="Be brief.",
        model=kind(model=name, openai_client=openai_client(gateway)),
        tools=[get_weather],
    )
    result = Runner.run_sync(agent, "What is the weather in Paris?")
    kinds = [type(item) for item in result.new_items]
    assert ToolCallItem in kinds and ToolCallOutputItem in kinds
    assert result.final_output


@pytest.mark.parametrize("name", MODELS)
def test_openai_agents_sdk_streams(gateway: RouterServer, name: str) -> None:
    agent = Agent(
        name="plain",
        instructions="Be brief.",
        model=OpenAIResponsesModel(model=name, openai_client=openai_client(gateway)),
    )

    async def run() -> tuple[list[str], object]:
        streamed = Runner.run_streamed(agent, "Hello there, router")
        kinds = [event.type async for event in streamed.stream_events()]
        return kinds, streamed.final_output

    kinds, final = asyncio.run(run())
    assert "raw_response_event" in kinds
    assert final == "Echo: Hello there, router"


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("name", MODELS)
def test_pydantic_ai_calls_a_tool_and_answers(gateway: RouterServer, api: str, name: str) -> None:
    provider = OpenAIProvider(openai_client=openai_client(gateway))
    model = (
        PydanticResponsesModel(name, provider=provider)
        if api == "responses"
        else OpenAIChatModel(name, provider=provider)
    )
    agent = PydanticAgent(model, instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    result = agent.run_sync("What is the weather in Paris?")
    parts = [p for m in result.all_messages() for p in m.parts]
    assert any(isinstance(p, ToolCallPart) and p.tool_name == "weather" for p in parts)
    assert any(isinstance(p, ToolReturnPart) for p in parts)
    assert result.output


@pytest.mark.parametrize("name", MODELS)
def test_pydantic_ai_streams(gateway: RouterServer, name: str) -> None:
    provider = OpenAIProvider(openai_client=openai_client(gateway))
    agent = PydanticAgent(OpenAIChatModel(name, provider=provider))

    async def run() -> str:
        async with agent.run_stream("Hello there, router") as stream:
            return "".join([delta async for delta in stream.stream_text(delta=True)])

    assert asyncio.run(run()) == "Echo: Hello there, router"
