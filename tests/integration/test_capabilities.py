"""A request no model could ever serve is the client's error (400 naming the field), not
an outage (503, which the SDKs retry); a capable model that is down is still a 503."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Factory
from tests.fakes.faults import Fault
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


INCAPABLE = {
    "supportsFunctionCalling": False,
    "supportsStructuredOutput": False,
    "supportsLogprobs": False,
}


def plain_table(fakes: Fakes, **routing: object) -> dict[str, object]:
    """Model "plain" on vLLM and Anthropic: no function calling, structured output or log
    probabilities, at most 4096 tokens out."""
    return table(
        [
            provider("vllm", "vllm", fakes.vllm.url),
            provider("claude", "anthropic", fakes.anthropic.url, key_env="SY_TEST_ANTHROPIC_KEY"),
        ],
        [
            model("plain", "vllm", "meta-llama/Llama-3.1-8B-Instruct", **INCAPABLE),
            model("plain", "claude", "claude-haiku-4-5", **INCAPABLE),
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
        for line in httpx.get(f"{plain.admin}/metrics").text.splitlines()
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


class City(BaseModel):
    name: str


def test_structured_output_and_logprobs_need_a_model_that_declares_them(
    plain: RouterServer, fakes: Fakes
) -> None:
    """Each SDK's own structured-output helper, refused by name, without a retry."""
    oai = openai.OpenAI(base_url=f"{plain.url}/v1", api_key=KEY)
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.parse(
            model="plain",
            messages=[{"role": "user", "content": "Capital of France?"}],
            response_format=City,
        )
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert "structured output" in err.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model="plain",
            messages=[{"role": "user", "content": "Hi"}],
            logprobs=True,
            top_logprobs=2,
        )
    assert err.value.body["param"] == "logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.parse(model="plain", input="Capital of France?", text_format=City)
    assert err.value.body["param"] == "text.format"  # type: ignore[index]
    claude = anthropic.Anthropic(base_url=plain.url, api_key=KEY)
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude.messages.parse(
            model="plain",
            max_tokens=100,
            messages=[{"role": "user", "content": "Capital of France?"}],
            output_format=City,
        )
    assert "output_config.format" in aerr.value.message
    assert provider_calls(fakes) == 0


def test_a_model_declaring_structured_output_takes_it(fakes: Fakes, router: Factory) -> None:
    """In a group, the request goes to the member that declares it, without a failed try."""
    gw = router(
        table(
            [
                provider("vllm", "vllm", fakes.vllm.url, priority=1),
                provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
            ],
            [
                model("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct", **INCAPABLE),
                model("chat", "openai", "gpt-4o-mini"),
            ],
        )
    )
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    done = oai.chat.completions.parse(
        model="chat",
        messages=[{"role": "user", "content": "Which city is in France?"}],
        response_format=City,
    )
    assert isinstance(done.choices[0].message.parsed, City)
    assert (fakes.vllm.completions, fakes.openai.completions) == (0, 1)
    listed = {m.id: m for m in oai.models.list()}
    assert listed["chat"].capabilities == {  # type: ignore[attr-defined]
        "function_calling": True,
        "structured_output": True,
        "logprobs": True,
        "streaming": True,
    }
    assert listed["chat"].context_window == 32000  # type: ignore[attr-defined]


def test_a_503_says_when_the_breaker_lets_requests_through_again(
    fakes: Fakes, router: Factory
) -> None:
    gw = router(
        table(
            [provider("vllm", "vllm", fakes.vllm.url)],
            [model("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct")],
            routing={"maxAttempts": 1, "breaker": {"failureThreshold": 1, "cooldownSeconds": 20}},
        )
    )
    fakes.vllm.push(Fault.error(500))
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
    first = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body)
    assert first.status_code == 503, first.text
    assert first.json()["error"]["attempts"][0]["status"] == 500
    assert 18 <= int(first.headers["Retry-After"]) <= 20  # the failure opened it
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "no_candidate_available"
    assert 18 <= int(r.headers["Retry-After"]) <= 20
