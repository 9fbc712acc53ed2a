"""A request no model could ever serve is the client's error (400 naming the field), not
an outage (503, which the SDKs retry); a capable model that is down is still a 503."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def plain_table(fakes: Fakes, **routing: object) -> dict[str, object]:
    """Model "plain" on vLLM and Anthropic: no function calling, at most 4096 tokens out."""
    return table(
        [
            provider("vllm", "vllm", fakes.vllm.url),
            provider("claude", "anthropic", fakes.anthropic.url, key_env="SY_TEST_ANTHROPIC_KEY"),
        ],
        [
            model(
                "plain", "vllm", "meta-llama/Llama-3.1-8B-Instruct", supportsFunctionCalling=False
            ),
            model("plain", "claude", "claude-haiku-4-5", supportsFunctionCalling=False),
        ],
        routing=routing or None,
    )


@pytest.fixture
def plain(fakes: Fakes, router: Factory) -> RouterServer:
    return router(plain_table(fakes))


@pytest.fixture
def unclamped(fakes: Fakes, router: Factory) -> RouterServer:
    """The same, with clamping off: a model that cannot give what is asked is skipped."""
    return router(plain_table(fakes, clampMaxTokens=False))


def provider_calls(fakes: Fakes) -> int:
    return fakes.vllm.completions + fakes.anthropic.completions


def test_tools_to_models_without_function_calling_are_a_400_the_sdk_does_not_retry(
    plain: RouterServer, fakes: Fakes
) -> None:
    client = openai.OpenAI(base_url=f"{plain.url}/v1", api_key=KEY)  # default retries on
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="plain",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == "tools"
    assert "function calling" in body["message"]
    assert provider_calls(fakes) == 0
    # Refused once: the SDK retries 5xx, not 400.
    refused = [
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{plain.url}/metrics").text.splitlines()
        if line.startswith("switchyard_requests_total{") and 'status="400"' in line
    ]
    assert refused == [1.0]


def test_more_output_than_a_model_gives_is_clamped_and_said(
    plain: RouterServer, fakes: Fakes
) -> None:
    """LiteLLM's default for anthropic/ models is 128000; the model gives 4096."""
    client = anthropic.Anthropic(base_url=plain.url, api_key=KEY)
    with client.messages.stream(
        model="plain", max_tokens=128_000, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        stream.until_done()
        header = stream.response.headers["x-switchyard-max-tokens"]
    assert header == "4096; requested=128000"
    sent = (fakes.vllm.requests or fakes.anthropic.requests)[-1].body
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 4096
    r = httpx.post(
        f"{plain.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "chat", "model": "plain", "prompt": "Hi", "maxTokens": 5000},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-switchyard-max-tokens"] == "4096; requested=5000"
    r = httpx.post(
        f"{plain.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "chat", "model": "plain", "prompt": "Hi", "maxTokens": 100},
    )
    assert "x-switchyard-max-tokens" not in r.headers


def test_with_clamping_off_more_output_than_any_model_gives_names_max_tokens_and_the_limit(
    unclamped: RouterServer, fakes: Fakes
) -> None:
    client = anthropic.Anthropic(base_url=unclamped.url, api_key=KEY)
    # LiteLLM's default for anthropic/ models; streamed, as the SDK insists for it.
    with (
        pytest.raises(anthropic.BadRequestError) as err,
        client.messages.stream(
            model="plain", max_tokens=128_000, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        stream.until_done()
    body = err.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["field"] == "max_tokens"
    assert "128000" in body["error"]["message"] and "4096" in body["error"]["message"]
    assert provider_calls(fakes) == 0


def test_the_openai_surface_names_max_tokens_and_the_native_one_max_tokens_camel(
    unclamped: RouterServer,
) -> None:
    plain = unclamped
    r = httpx.post(
        f"{plain.url}/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "plain",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5000,
        },
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "max_tokens"
    assert r.json()["error"]["message"].startswith("max_tokens: 5000 is more than")
    r = httpx.post(
        f"{plain.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "chat", "model": "plain", "prompt": "Hi", "maxTokens": 5000},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "maxTokens"
    assert r.json()["error"]["message"].startswith("maxTokens: 5000 is more than")
    assert "4096" in r.json()["error"]["message"]


def test_a_capable_model_that_is_down_is_still_a_503(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [provider("vllm", "vllm", fakes.vllm.url, healthStatus="unhealthy")],
            [model("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct")],
        )
    )
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER]},
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "no_candidate_available"
