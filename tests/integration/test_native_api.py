"""``POST /api/v1/llm/completion``: the brief's API, its limits and its stream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Factory
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, READONLY_KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def gw(fakes: Fakes, router: Factory) -> RouterServer:
    return router(
        table(
            [
                provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
                provider("local", "vllm", fakes.vllm.url, priority=5),
            ],
            [
                model(
                    "gpt-4o-mini",
                    "openai",
                    inputPricePer1MTokens="0.15",
                    outputPricePer1MTokens="0.60",
                    bestFor=["code_analysis"],
                ),
                model(
                    "llama",
                    "local",
                    "meta-llama/Llama-3.1-8B-Instruct",
                    inputPricePer1MTokens="0",
                    outputPricePer1MTokens="0",
                    bestFor=["documentation"],
                ),
            ],
            templates=[
                {
                    "name": "review",
                    "template": "Review this {{lang}} code:\n{{code}}",
                    "variables": ["lang", "code"],
                    "modelOverrides": [{"model": "llama", "template": "[{{lang}}] {{code}}"}],
                },
            ],
            routing={"maxBodyBytes": 4096},
        )
    )


def post(gw: RouterServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        content=content,
        headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
    )


def test_completion_field_for_field(gw: RouterServer) -> None:
    r = post(
        gw,
        {"taskType": "code_analysis", "prompt": "look at this", "maxTokens": 100, "temperature": 0},
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"id", "content", "model", "usage", "cost", "performance", "cacheHit"}
    assert body["content"] == "Echo: look at this"
    assert body["model"] == "gpt-4o-mini"  # task fit beats the cheaper local model
    assert body["usage"] == {"promptTokens": 7, "completionTokens": 4, "totalTokens": 11}
    # 7 * 0.15 / 1e6 and 4 * 0.60 / 1e6, exactly.
    assert body["cost"] == {
        "input": "0.00000105",
        "output": "0.0000024",
        "total": "0.00000345",
        "currency": "USD",
    }
    assert body["performance"]["latencyMs"] > 0
    assert body["cacheHit"] is False


def test_task_type_routes_by_best_for(gw: RouterServer) -> None:
    r = post(gw, {"taskType": "documentation", "prompt": "document this"})
    assert r.json()["model"] == "llama"
    # An unknown task falls back to priority, then price.
    r = post(gw, {"taskType": "poetry", "prompt": "a poem"})
    assert r.json()["model"] == "llama"


def test_explicit_model_is_honoured(gw: RouterServer) -> None:
    r = post(gw, {"taskType": "documentation", "prompt": "x", "model": "gpt-4o-mini"})
    assert r.json()["model"] == "gpt-4o-mini"


def test_stream_ends_with_usage_cost_and_performance(gw: RouterServer) -> None:
    with httpx.stream(
        "POST",
        f"{gw.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "code_analysis", "prompt": "stream it now", "stream": True},
    ) as r:
        assert r.status_code == 200
        lines = [x for x in r.iter_lines() if x]
    events = list(zip(lines[::2], lines[1::2], strict=True))
    names = [e[0].removeprefix("event: ") for e in events]
    assert names == ["delta"] * 4 + ["done"]
    text = "".join(json.loads(e[1][6:])["content"] for e in events[:-1])
    assert text == "Echo: stream it now"
    done = json.loads(events[-1][1][6:])
    assert done["usage"] == {"promptTokens": 7, "completionTokens": 4, "totalTokens": 11}
    assert done["cost"]["total"] == "0.00000345"
    assert done["performance"]["timeToFirstTokenMs"] <= done["performance"]["latencyMs"]


def test_template_instead_of_prompt(gw: RouterServer, fakes: Fakes) -> None:
    r = post(
        gw,
        {
            "taskType": "code_analysis",
            "template": "review",
            "variables": {"lang": "Go", "code": "x := $1"},
        },
    )
    assert r.status_code == 200
    assert fakes.openai.requests[-1].body["messages"][-1]["content"] == (
        "Review this Go code:\nx := $1"
    )
    r = post(
        gw,
        {
            "taskType": "code_analysis",
            "template": "review",
            "model": "llama",
            "variables": {"lang": "Go", "code": "y"},
        },
    )
    assert fakes.vllm.requests[-1].body["messages"][-1]["content"] == "[Go] y"
    r = post(gw, {"taskType": "code_analysis", "template": "review", "variables": {"lang": "Go"}})
    assert r.status_code == 400 and "code" in r.json()["error"]["message"]


BAD = [
    ({"prompt": "x"}, "taskType", "is required"),
    ({"taskType": "t"}, None, "prompt"),
    ({"taskType": "t", "prompt": ""}, "prompt", "at least 1"),
    ({"taskType": "t", "prompt": "   "}, None, "blank"),
    ({"taskType": "t", "prompt": 5}, "prompt", "string"),
    ({"taskType": "t", "prompt": "x", "maxTokens": 0}, "maxTokens", "greater than or equal to 1"),
    (
        {"taskType": "t", "prompt": "x", "maxTokens": 8193},
        "maxTokens",
        "less than or equal to 8192",
    ),
    ({"taskType": "t", "prompt": "x", "maxTokens": "lots"}, "maxTokens", "integer"),
    ({"taskType": "t", "prompt": "x", "temperature": -0.1}, "temperature", "greater than or equal"),
    ({"taskType": "t", "prompt": "x", "temperature": 2.01}, "temperature", "less than or equal"),
    ({"taskType": "t", "prompt": "x", "temperature": "hot"}, "temperature", "number"),
    ({"taskType": "t", "prompt": "x", "stream": "maybe"}, "stream", "boolean"),
    ({"taskType": "t", "prompt": "x", "stream": "yes"}, "stream", "boolean"),
    ({"taskType": "t", "prompt": "x", "maxTokens": "5"}, "maxTokens", "integer"),
    ({"taskType": "t", "prompt": "x", "maxTokens": 5.5}, "maxTokens", "integer"),
    ({"taskType": "t", "prompt": "x", "colour": "red"}, "colour", "not a known field"),
    ({"taskType": "no spaces", "prompt": "x"}, "taskType", "pattern"),
    ({"taskType": "t", "prompt": "x", "model": "nope"}, "model", "does not exist"),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD)
def test_bad_requests_name_the_field(
    gw: RouterServer, body: dict[str, Any], field: str | None, words: str
) -> None:
    r = post(gw, body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err.get("field") == field
    assert words in err["message"]


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"", 400, "empty"),
        (json.dumps({"taskType": "t", "prompt": "x" * 5000}).encode(), 413, "limit"),
    ],
)
def test_malformed_and_oversize_bodies(
    gw: RouterServer, raw: bytes, status: int, words: str
) -> None:
    r = post(gw, raw)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]


def test_oversize_chunked_body_is_refused_while_reading(gw: RouterServer) -> None:
    def chunks():  # no Content-Length: the limit must hold as the body streams in
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(f"{gw.url}/api/v1/llm/completion", content=chunks(), headers=AUTH)
    assert r.status_code == 413


@pytest.mark.parametrize("clamp", [True, False])
def test_max_tokens_beyond_every_model(fakes: Fakes, router: Factory, clamp: bool) -> None:
    gw = router(
        table(
            [provider("v", "vllm", fakes.vllm.url)],
            [
                model(
                    "small",
                    "v",
                    "meta-llama/Llama-3.1-8B-Instruct",
                    contextWindow=2048,
                    maxOutputTokens=512,
                )
            ],
            routing={"clampMaxTokens": clamp},
        )
    )
    r = post(gw, {"taskType": "t", "prompt": "x", "maxTokens": 1000})
    if clamp:  # asked for what the model gives, and told so
        assert r.status_code == 200, r.text
        assert r.headers["x-switchyard-max-tokens"] == "512; requested=1000"
        assert fakes.vllm.requests[-1].body["max_tokens"] == 512
    else:
        assert r.status_code == 400
        assert "maxOutputTokens" in r.json()["error"]["message"]
    # A prompt that leaves no room in the window is refused either way.
    r = post(gw, {"taskType": "t", "prompt": "word " * 2000, "maxTokens": 500})
    assert r.status_code == 400
    assert "context window" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": f"Bearer {READONLY_KEY}"}, 403),
    ],
)
def test_auth(gw: RouterServer, headers: dict[str, str], status: int) -> None:
    r = post(gw, {"taskType": "t", "prompt": "x"}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] in ("unauthorized", "forbidden")


def test_unknown_endpoint_and_method_are_json(gw: RouterServer) -> None:
    r = httpx.get(f"{gw.url}/api/v1/llm/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(f"{gw.url}/api/v1/llm/completion", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
