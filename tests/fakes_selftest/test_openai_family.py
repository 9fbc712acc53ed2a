"""The official openai SDK must parse FakeOpenAI, FakeAzureOpenAI and FakeVLLM."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeAzureOpenAI, FakeOpenAI, FakeVLLM, Fault

USER = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["location"],
        },
    },
}


def client(fake: FakeOpenAI, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url, api_key=key or "test-key", max_retries=0, timeout=5)


def azure(fake: FakeAzureOpenAI, key: str = "test-key") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key=key, api_version="2024-10-21", max_retries=0, timeout=5
    )


# ---------------------------------------------------------------- OpenAI
def test_openai_non_streaming(fake_openai: FakeOpenAI) -> None:
    r = client(fake_openai).chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        temperature=0.2,  # type: ignore[arg-type]
    )
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "Echo: hello there world"
    assert r.choices[0].message.refusal is None
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2 + 4 + 3 + 4, 4)
    assert r.usage.total_tokens == 17
    sent = fake_openai.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.body["temperature"] == 0.2
    assert fake_openai.completions == 1


def test_openai_headers(fake_openai: FakeOpenAI) -> None:
    raw = client(fake_openai).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=USER,  # type: ignore[arg-type]
    )
    for name in (
        "x-request-id",
        "openai-processing-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ):
        assert raw.headers.get(name), name
    assert raw.headers["x-request-id"].startswith("req_")


def test_openai_streaming_with_usage(fake_openai: FakeOpenAI) -> None:
    chunks = list(
        client(fake_openai).chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_openai_streaming_without_usage_and_done(fake_openai: FakeOpenAI) -> None:
    with httpx.stream(
        "POST",
        fake_openai.url + "/chat/completions",
        headers={"Authorization": "Bearer test-key"},
        json={"model": "gpt-4o-mini", "messages": USER, "stream": True},
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in resp.iter_lines() if line]
    assert frames[-1] == "data: [DONE]"
    payloads = [json.loads(f[6:]) for f in frames[:-1]]
    assert all(p["choices"] for p in payloads)
    assert "usage" not in payloads[0]
    assert payloads[-1]["choices"][0]["delta"] == {}


def test_openai_max_tokens_and_stop(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    r = c.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Echo: hello"
    assert r.choices[0].finish_reason == "length"
    r = c.chat.completions.create(model="gpt-4o", messages=USER, stop=[" there"])  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Echo: hello"
    assert r.choices[0].finish_reason == "stop"


def test_openai_tool_calls(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    msgs: Any = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = c.chat.completions.create(model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL])
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"location": "Paris"}  # type: ignore[union-attr]

    stream = c.chat.completions.create(
        model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL], stream=True
    )
    chunks = list(stream)
    deltas = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    args = "".join((d.function.arguments or "") for d in deltas if d.function)
    assert json.loads(args) == {"location": "Paris"} and all(d.index == 0 for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # forced by tool_choice, even without the trigger word
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert r.choices[0].finish_reason == "tool_calls"
    # a tool result turn gets a text answer
    follow: Any = [
        *msgs,
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r = c.chat.completions.create(model="gpt-4o", messages=follow, tools=[WEATHER_TOOL])
    assert r.choices[0].finish_reason == "stop"


def test_openai_errors(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        client(fake_openai, key="wrong").chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as nf:
        client(fake_openai).chat.completions.create(model="nope", messages=USER)  # type: ignore[arg-type]
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client(fake_openai).chat.completions.create(model="gpt-4o", messages=[])
    assert bad.value.type == "invalid_request_error"
    resp = httpx.post(
        fake_openai.url + "/chat/completions",
        headers={"Authorization": "Bearer test-key"},
        json={"model": "gpt-4o"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "missing_required_parameter"


def test_openai_faults(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.push(Fault.error(429, retry_after=2), Fault.error(500), Fault.reset(), Fault.cut(1))
    with pytest.raises(openai.RateLimitError) as rl:
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert rl.value.response.headers["retry-after"] == "2"
    assert rl.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert rl.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert c.chat.completions.create(model="gpt-4o", messages=USER).choices  # type: ignore[arg-type]
    assert fake_openai.completions == 5


def test_openai_stream_faults(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.push(Fault.cut(2))
    got: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        for ch in c.chat.completions.create(model="gpt-4o", messages=USER, stream=True):  # type: ignore[arg-type]
            got.append(ch.choices[0].delta.content or "")
    assert "".join(got) == "Echo: hello"
    fake_openai.push(Fault.stream_error(1))
    got = []
    with pytest.raises(openai.APIError) as err:
        for ch in c.chat.completions.create(model="gpt-4o", messages=USER, stream=True):  # type: ignore[arg-type]
            got.append(ch.choices[0].delta.content or "")
    assert "".join(got) == "Echo:"
    assert "server had an error" in err.value.message


def test_stall_and_default(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.push(Fault.stall(0.4))
    started = time.monotonic()
    c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.4
    fake_openai.set_default(Fault.error(503))
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    fake_openai.set_default(None)
    c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.APITimeoutError):
        fake_openai.push(Fault.stall(1.0))
        c.with_options(timeout=0.2).chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]


def test_pauses_garbage_and_trickles(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.push(Fault.stall_mid(1, 0.4))
    started = time.monotonic()
    arrivals = [
        time.monotonic() - started
        for _ in c.chat.completions.create(model="gpt-4o", messages=USER, stream=True)  # type: ignore[arg-type]
    ]
    assert arrivals[1] < 0.3 and arrivals[-1] >= 0.4  # the pause comes mid-stream
    fake_openai.push(Fault.stall_mid(0, 0.4))
    started = time.monotonic()
    assert c.chat.completions.create(model="gpt-4o", messages=USER).choices  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.4
    fake_openai.push(Fault.malformed(), Fault.malformed())
    with pytest.raises(json.JSONDecodeError):
        c.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(json.JSONDecodeError):
        list(c.chat.completions.create(model="gpt-4o", messages=USER, stream=True))  # type: ignore[arg-type]
    fake_openai.push(Fault.trickle(0.5))
    started = time.monotonic()
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=USER, stream=True))  # type: ignore[arg-type]
    assert len(chunks) > 3 and time.monotonic() - started >= 0.45


def test_the_same_port_after_a_restart() -> None:
    fake = FakeOpenAI().start()
    try:
        port = fake.port
        fake.stop()
        with pytest.raises(openai.APIConnectionError):
            client(fake).models.list()
        fake.start()
        assert fake.port == port
        assert client(fake).models.list().data
    finally:
        fake.stop()


def test_openai_models(fake_openai: FakeOpenAI) -> None:
    ids = [m.id for m in client(fake_openai).models.list()]
    assert ids == ["gpt-4o-mini", "gpt-4o"]


# ----------------------------------------------------------------- Azure
def test_azure_round_trip(fake_azure: FakeAzureOpenAI) -> None:
    c = azure(fake_azure)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Echo: hello there world"
    extra = r.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert (r.choices[0].model_extra or {})["content_filter_results"]["hate"]["filtered"] is False
    sent = fake_azure.requests[-1]
    assert sent.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent.query["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == "test-key"

    chunks = list(
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert chunks[0].choices == [] and (chunks[0].model_extra or {})["prompt_filter_results"]
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "Echo: hello there world"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_azure_errors(fake_azure: FakeAzureOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        azure(fake_azure, key="nope").chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as nf:
        azure(fake_azure).chat.completions.create(model="missing", messages=USER)  # type: ignore[arg-type]
    assert nf.value.code == "DeploymentNotFound"
    resp = httpx.post(
        fake_azure.url + "/openai/deployments/gpt-4o-mini/chat/completions",
        headers={"api-key": "test-key"},
        json={"messages": USER},
    )
    assert resp.status_code == 404 and resp.json() == {
        "error": {"code": "404", "message": "Resource not found"}
    }
    bearer = httpx.post(
        fake_azure.url + "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        headers={"Authorization": "Bearer test-key"},
        json={"messages": USER},
    )
    assert bearer.status_code == 200
    fake_azure.push(Fault.error(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as rl:
        azure(fake_azure).chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    assert rl.value.code == "429"
    assert rl.value.response.headers["retry-after-ms"] == "3000"


# ------------------------------------------------------------------ vLLM
def test_vllm_round_trip(fake_vllm: FakeVLLM) -> None:
    c = client(fake_vllm)
    models = list(c.models.list())
    card = models[0].model_dump()
    assert (
        card["owned_by"] == "vllm" and card["root"] == card["id"] and card["max_model_len"] == 8192
    )
    r = c.chat.completions.create(model=models[0].id, messages=USER)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Echo: hello there world"
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model=models[0].id, messages=USER, stream=True)  # type: ignore[arg-type]
        if ch.choices
    )
    assert text == "Echo: hello there world"
    assert httpx.get(fake_vllm.url.removesuffix("/v1") + "/health").status_code == 200


def test_vllm_errors(fake_vllm: FakeVLLM) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client(fake_vllm).chat.completions.create(model="nope", messages=USER)  # type: ignore[arg-type]
    assert nf.value.body == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    resp = httpx.post(fake_vllm.url + "/chat/completions", json={"model": "x", "messages": USER})
    assert resp.status_code == 401 and resp.json() == {"error": "Unauthorized"}
    bad = httpx.post(
        fake_vllm.url + "/chat/completions", headers={"Authorization": "Bearer test-key"}, json={}
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"


def test_vllm_without_auth_and_legacy_errors() -> None:
    with FakeVLLM(api_key=None, legacy_errors=True, models=["m"]) as fake:
        ok = httpx.post(fake.url + "/chat/completions", json={"messages": USER})
        assert ok.status_code == 200 and ok.json()["model"] == "m"
        nf = httpx.post(fake.url + "/chat/completions", json={"model": "x", "messages": USER})
        assert nf.json()["object"] == "error" and nf.json()["code"] == 404
