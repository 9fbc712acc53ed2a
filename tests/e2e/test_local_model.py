"""The real local model (SmolLM2-135M on llama.cpp) behind the router, as an in-cluster vLLM."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from switchyard.router.local_model import CAPABILITIES
from tests.conftest import Factory
from tests.support.servers import LocalModel, RouterServer
from tests.support.tables import KEY, model, provider, table


@pytest.fixture
def gw(local_model: LocalModel, router: Factory) -> RouterServer:
    return router(
        table(
            [provider("local", "vllm", local_model.url)],
            [
                model(
                    "smollm2",
                    "local",
                    "smollm2-135m",
                    contextWindow=8192,
                    maxOutputTokens=2048,
                    inputPricePer1MTokens="0",
                    outputPricePer1MTokens="0",
                    bestFor=["documentation"],
                )
            ],
        )
    )


def test_openai_sdk_non_streaming(gw: RouterServer) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    resp = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
        temperature=0,
    )
    text = resp.choices[0].message.content or ""
    assert text.strip()
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.prompt_tokens > 10
    assert 0 < resp.usage.completion_tokens <= 24


def test_openai_sdk_streaming(gw: RouterServer) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 16


def test_anthropic_sdk_stream(gw: RouterServer) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    with client.messages.stream(
        model="smollm2",
        max_tokens=16,
        system="Be brief.",
        messages=[{"role": "user", "content": "Name a colour."}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0


def test_native_api_by_task(gw: RouterServer) -> None:
    r = httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "taskType": "documentation",
            "prompt": "Describe a README in one line.",
            "maxTokens": 20,
            "temperature": 0,
        },
        timeout=60,
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["model"] == "smollm2" and body["content"].strip()
    assert body["cost"]["total"] == "0"
    assert body["usage"]["completionTokens"] <= 20


def test_health_check_sees_the_model(gw: RouterServer) -> None:
    r = httpx.post(
        f"{gw.url}/api/v1/llm/providers/local/health-check",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.json()["status"] == "healthy"
    assert "smollm2-135m" in r.json()["models"]


class City(BaseModel):
    name: str
    country: str


def test_structured_output_and_logprobs_through_the_sdk(
    local_model: LocalModel, router: Factory
) -> None:
    """What the local model declares (local_model.CAPABILITIES) is what it does."""
    declared = model("smollm2", "local", "smollm2-135m", contextWindow=8192, maxOutputTokens=2048)
    declared.update(CAPABILITIES)
    gw = router(table([provider("local", "vllm", local_model.url)], [declared]))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    done = client.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a city in France."}],
        response_format=City,
        max_tokens=60,
        temperature=0,
    )
    assert isinstance(done.choices[0].message.parsed, City)
    probed = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Hi"}],
        logprobs=True,
        top_logprobs=2,
        max_tokens=4,
        temperature=0,
    )
    lp = probed.choices[0].logprobs
    assert lp is not None and lp.content and len(lp.content[0].top_logprobs) == 2
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "weather", "parameters": {"type": "object"}},
                }
            ],
            max_tokens=8,
        )
    assert err.value.body["param"] == "tools"  # type: ignore[index]


def _computed(local_model: LocalModel) -> float:
    """Prompt tokens llama.cpp has computed so far (its own counter)."""
    text = httpx.get(local_model.url.removesuffix("/v1") + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("llamacpp:prompt_tokens_total "):
            return float(line.split()[1])
    raise AssertionError("llama.cpp publishes no llamacpp:prompt_tokens_total")


def test_a_conversation_keeps_its_llamacpp_slot_while_another_comes_between(
    local_model: LocalModel, router: Factory
) -> None:
    """Left to choose, llama.cpp gives a new conversation that shares the system prompt
    the slot of the one under way (the most similar), and the older one's next turn
    computes its document again: its prompt cache does not save a prompt that shares
    more than half with the new one. The router names each conversation's slot."""
    address = local_model.url.removeprefix("http://").removesuffix("/v1")
    gw = router(
        table(
            [provider("pool", "vllm", "http://llama.invalid:8000/v1", endpoints=[address])],
            [model("smollm2", "pool", "smollm2-135m", contextWindow=8192)],
        )
    )
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    system = "You are the operations assistant. Rules: " + " ".join(
        f"rule{i} keep answers short" for i in range(60)
    )

    def ask(messages: list[dict[str, str]]) -> str:
        resp = client.chat.completions.create(
            model="smollm2",
            messages=messages,
            max_tokens=4,
            temperature=0,  # type: ignore[arg-type]
        )
        return resp.choices[0].message.content or "ok"

    # A first call starts the scrape that reads the server's slots from its /props.
    ask([{"role": "user", "content": "hello"}])
    deadline = time.monotonic() + 10
    while True:
        listing = httpx.get(
            f"{gw.url}/api/v1/llm/providers", headers={"Authorization": f"Bearer {KEY}"}
        )
        (ep,) = listing.json()["providers"][0]["endpoints"]
        if ep["slots"] is not None:
            break
        assert time.monotonic() < deadline, ep
        time.sleep(0.1)
    assert ep["slots"] == 2  # switchyard local-model's --parallel default

    def opening(name: str) -> list[dict[str, str]]:
        log = " ".join(f"{name}{i}" for i in range(40))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Conversation {name}. Read this log: {log}"},
        ]

    a = opening("alpha")
    a += [{"role": "assistant", "content": ask(a)}, {"role": "user", "content": "And then?"}]
    b = opening("beta")
    ask(b)
    before = _computed(local_model)
    ask(a)
    # Only the new turn was computed: the system prompt and alpha's log were still in
    # its slot, though beta's opening came between.
    assert _computed(local_model) - before < 40
