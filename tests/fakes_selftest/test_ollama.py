"""FakeOllama speaks Ollama's native NDJSON API."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOllama, Fault

MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)$")
FINAL_FIELDS = {
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}


def chat(fake: FakeOllama, **body: Any) -> httpx.Response:
    return httpx.post(fake.url + "/api/chat", json={"model": "llama3.2", "messages": MSGS, **body})


def test_streams_ndjson_by_default(fake_ollama: FakeOllama) -> None:
    resp = chat(fake_ollama)
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines) == "Echo: hello there world"
    final = lines[-1]
    assert set(final) >= FINAL_FIELDS and final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 2 + 4 + 3 + 4 and final["eval_count"] == 4
    assert all(RFC3339_NANO.match(line["created_at"]) for line in lines)
    assert final["model"] == "llama3.2"


def test_non_streaming(fake_ollama: FakeOllama) -> None:
    body = chat(fake_ollama, stream=False, options={"temperature": 0, "num_predict": 2}).json()
    assert body["message"] == {"role": "assistant", "content": "Echo: hello"}
    assert body["done"] is True and body["done_reason"] == "length" and set(body) >= FINAL_FIELDS
    assert fake_ollama.requests[-1].body["options"]["temperature"] == 0
    stopped = chat(fake_ollama, stream=False, options={"stop": [" world"]}).json()
    assert stopped["message"]["content"] == "Echo: hello there" and stopped["done_reason"] == "stop"


def test_tool_calls(fake_ollama: FakeOllama) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    body = httpx.post(
        fake_ollama.url + "/api/chat",
        json={
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "weather in Rome?"}],
            "tools": tools,
            "stream": False,
        },
    ).json()
    call = body["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Rome"}


def test_errors_and_models(fake_ollama: FakeOllama) -> None:
    missing = httpx.post(fake_ollama.url + "/api/chat", json={"model": "mistral", "messages": MSGS})
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "mistral" not found, try pulling it first'}
    assert httpx.post(fake_ollama.url + "/api/chat", json={"messages": MSGS}).status_code == 400
    tags = httpx.get(fake_ollama.url + "/api/tags").json()["models"]
    assert tags[0]["name"] == "llama3.2:latest"
    assert {"format", "family", "families", "parameter_size", "quantization_level"} <= set(
        tags[0]["details"]
    )
    assert httpx.get(fake_ollama.url + "/api/version").json()["version"]
    assert httpx.post(fake_ollama.url + "/api/show", json={"model": "llama3.2"}).status_code == 200


def test_faults(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(
        Fault.stream_error(1), Fault.error(503, retry_after=1), Fault.reset(), Fault.cut(1)
    )
    lines = [json.loads(line) for line in chat(fake_ollama).text.splitlines()]
    assert lines[0]["message"]["content"] == "Echo:" and "error" in lines[-1] and len(lines) == 2
    busy = chat(fake_ollama)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "error" in busy.json()
    with pytest.raises(httpx.TransportError):
        chat(fake_ollama)
    with pytest.raises(httpx.TransportError):
        chat(fake_ollama)
    assert fake_ollama.completions == 4
