"""Hostile input from a holder of one ordinary key: refused early, never blamed on providers.

Each test is one way an attacker (or a broken client) tried to make the router spend,
count, leak or crash, sent through real HTTP.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from switchyard.router.server import ServerLimits
from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import KEYS, Fakes
from tests.support.raw_http import Raw
from tests.support.servers import RouterServer, free_port
from tests.support.tables import KEY, api_keys, model, provider, sha, table

AUTH = {"Authorization": f"Bearer {KEY}"}
#: A second completion key of the same organization: what the attacker's neighbours hold.
NEIGHBOUR_KEY = "sy-test-neighbour-key"
NEIGHBOUR = {"Authorization": f"Bearer {NEIGHBOUR_KEY}"}


def nested(levels: int) -> dict[str, Any]:
    """A JSON schema ``levels`` objects deep, as a tool's parameters."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def deep_tool(levels: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": nested(levels)},
        }
    ]


@pytest.fixture
def pair(fakes: Fakes, router: Factory) -> RouterServer:
    """Model "chat" on OpenAI, with vLLM behind it; breakers open after three failures."""
    neighbour = {"name": "neighbour", "sha256": sha(NEIGHBOUR_KEY), "scopes": ["completion"]}
    doc = table(
        [
            provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY"),
            provider("vllm", "vllm", fakes.vllm.url, priority=20),
            provider("claude", "anthropic", fakes.anthropic.url, key_env="SY_TEST_ANTHROPIC_KEY"),
        ],
        [
            model("chat", "openai", "gpt-4o-mini"),
            model("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct"),
            model("claude", "claude", "claude-haiku-4-5"),
        ],
        routing={"breaker": {"failureThreshold": 3, "cooldownSeconds": 300}},
    )
    doc["apiKeys"] = [*api_keys(), neighbour]
    assert KEYS  # the fakes' keys are in the environment
    return router(doc)


def breakers(gw: RouterServer) -> dict[str, str]:
    r = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH)
    r.raise_for_status()
    return {p["name"]: p["circuitBreaker"] for p in r.json()["providers"]}


def provider_calls(fakes: Fakes) -> int:
    return fakes.openai.completions + fakes.vllm.completions + fakes.anthropic.completions


# -- 1. local errors never open a provider's breaker --------------------------


@pytest.mark.parametrize("levels", [40, 150, 400])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("temperature", [None, 0])
def test_deep_tool_schema_is_refused_before_any_provider(
    pair: RouterServer, fakes: Fakes, levels: int, stream: bool, temperature: int | None
) -> None:
    body: dict[str, Any] = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": deep_tool(levels),
        "stream": stream,
    }
    if temperature is not None:
        body["temperature"] = temperature  # the cache keys this request
    for _ in range(5):
        r = httpx.post(f"{pair.url}/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["field"] == "tools[0].function.parameters.properties.a"
        assert "more than 64 levels deep" in err["message"]
    assert provider_calls(fakes) == 0
    assert breakers(pair) == {"claude": "closed", "openai": "closed", "vllm": "closed"}
    ok = httpx.post(
        f"{pair.url}/v1/chat/completions",
        headers=NEIGHBOUR,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-switchyard-provider"] == "openai"


def test_a_request_63_levels_deep_is_served(pair: RouterServer, fakes: Fakes) -> None:
    # The body, tools, tools[0] and function, then 59 objects of schema: 63 levels, one
    # below the limit. What is accepted must also encode for the provider.
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": deep_tool(29),
    }
    r = httpx.post(f"{pair.url}/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    sent = fakes.openai.requests[-1].body
    assert sent["tools"][0]["function"]["parameters"] == nested(29)


def test_exactly_64_levels_is_served_and_65_is_not(pair: RouterServer, fakes: Fakes) -> None:
    # 63 levels of objects as above, then a list inside the innermost schema: 64. A list
    # in that list: 65.
    for enum, status in ((["x"], 200), ([["x"]], 400)):
        tools = deep_tool(29)
        inner = tools[0]["function"]["parameters"]
        while "properties" in inner:
            inner = inner["properties"]["a"]
        inner["enum"] = enum
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
        r = httpx.post(f"{pair.url}/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == status, r.text
        if status == 400:
            assert "more than 64 levels deep" in r.json()["error"]["message"]
        else:
            assert fakes.openai.requests[-1].body["tools"] == tools


@pytest.mark.parametrize("stream", [False, True])
def test_deep_tool_use_input_on_the_messages_api(
    pair: RouterServer, fakes: Fakes, stream: bool
) -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = {"k": deep}
    body = {
        "model": "claude",
        "max_tokens": 64,
        "stream": stream,
        "messages": [
            {"role": "user", "content": "call it"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": deep}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ],
    }
    r = httpx.post(f"{pair.url}/v1/messages", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["field"] == "messages[1].content[0].input.k"
    assert provider_calls(fakes) == 0


def test_deep_json_is_refused_on_every_json_endpoint(pair: RouterServer) -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    for path in (
        "/api/v1/llm/completion",
        "/v1/chat/completions",
        "/v1/messages",
        "/api/v1/llm/templates/render",
    ):
        r = httpx.post(f"{pair.url}{path}", headers=AUTH, json={"deep": deep})
        assert r.status_code == 400, (path, r.text)
        assert "more than 64 levels deep" in r.text, path


def test_the_routers_own_failure_is_a_500_and_no_providers_fault(
    pair: RouterServer,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while preparing the provider request is counted and logged once, as ours."""
    from switchyard.router.protocols import openai as wire

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("a bug in the router")

    monkeypatch.setattr(wire, "request_body", broken)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.INFO):
        for stream in (False, True, False, True, False):
            r = httpx.post(
                f"{pair.url}/v1/chat/completions", headers=AUTH, json=body | {"stream": stream}
            )
            assert r.status_code == 500, r.text
            assert r.json()["error"]["code"] == "internal_error"
    assert provider_calls(fakes) == 0
    assert breakers(pair) == {"claude": "closed", "openai": "closed", "vllm": "closed"}
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 5 and all(rec.exc_info for rec in errors), errors
    metrics = httpx.get(f"{pair.admin}/metrics").text
    assert re.search(
        r'switchyard_requests_total\{api="openai",model="chat",organization="default",'
        r'provider="",status="500"\} 5\.0',
        metrics,
    ), metrics
    monkeypatch.undo()
    ok = httpx.post(f"{pair.url}/v1/chat/completions", headers=NEIGHBOUR, json=body)
    assert ok.status_code == 200 and ok.headers["x-switchyard-provider"] == "openai"


# -- 3. dates the store cannot represent -----------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("endDate=9999-12-31", "endDate"),
        ("endDate=0001-01-01", "endDate"),
        ("startDate=0001-01-01T00:00:00%2B23:59", "startDate"),
        ("startDate=9999-12-31T23:59:59-23:59", "startDate"),
        ("startDate=1969-12-31", "startDate"),
    ],
)
def test_usage_dates_out_of_range_are_400(pair: RouterServer, query: str, field: str) -> None:
    r = httpx.get(f"{pair.url}/api/v1/llm/usage?{query}", headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert "out of range" in r.json()["error"]["message"]


def test_usage_dates_at_the_edges_are_served(pair: RouterServer) -> None:
    for query in (
        "startDate=1970-01-01&endDate=1970-02-01",
        "endDate=1970-01-01",
        "startDate=9998-12-01&endDate=9998-12-31",
    ):
        r = httpx.get(f"{pair.url}/api/v1/llm/usage?{query}&groupBy=month", headers=AUTH)
        assert r.status_code == 200, (query, r.text)


# -- 5. request ids ---------------------------------------------------------


def test_request_ids_are_random_uuids(pair: RouterServer) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    before = time.time_ns() // 1_000_000
    ids = [
        httpx.post(f"{pair.url}/v1/chat/completions", headers=AUTH, json=body).headers[
            "x-switchyard-request-id"
        ]
        for _ in range(20)
    ]
    after = time.time_ns() // 1_000_000
    pattern = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(pattern.match(i) for i in ids), ids
    values = [int(i.replace("-", ""), 16) for i in ids]
    # Version 7: the request's own millisecond, then random bits.
    assert all(before <= v >> 80 <= after for v in values), ids
    # Consecutive ids of a counter differ by the traffic in between; the random 62 bits
    # after the variant by around 2**62 / 20 each.
    tails = sorted(v & (2**62 - 1) for v in values)
    assert min(b - a for a, b in itertools.pairwise(tails)) > 2**40


# -- 2. header size ---------------------------------------------------------


def test_a_header_over_the_limit_is_431(pair: RouterServer) -> None:
    for path, shape in (("/healthz", "error"), ("/v1/messages", "type")):
        with Raw(pair.url) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 64 * 1024}\r\n\r\n".encode())
            a = c.answer()
            assert a is not None and a.status == 431, a
            assert a.headers["content-type"] == "application/json"
            assert shape in a.json()
            assert "16384 bytes" in a.body.decode()
            assert c.closed()


def test_an_unfinished_header_is_cut_off_at_the_limit(pair: RouterServer) -> None:
    with Raw(pair.url) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        a = c.answer()  # answered before the header ends
        assert a is not None and a.status == 431
        assert a.json()["error"]["code"] == "request_header_fields_too_large"
        assert c.closed()


def test_many_small_headers_count_together(pair: RouterServer) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(2000))
    with Raw(pair.url) as c:
        c.send(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        a = c.answer()
        assert a is not None and a.status == 431


def test_headers_under_the_limit_are_served(pair: RouterServer) -> None:
    r = httpx.get(f"{pair.admin}/healthz", headers={"X-Big": "a" * 15_000})
    assert r.status_code == 200


def test_a_head_under_the_limit_read_with_a_large_body_is_served(pair: RouterServer) -> None:
    """The head and the body arrive in one read, more than the limit together: the head
    alone is measured."""
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "a" * 20_000}]})
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
        f"X-Big: {'a' * 15_000}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with Raw(pair.url) as c:
        c.send(head.encode() + body)
        a = c.answer()
        assert a is not None and a.status == 200, a


def test_answers_do_not_name_the_server_software(pair: RouterServer) -> None:
    """Nothing tells a caller which server and version to look up vulnerabilities for."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        httpx.post(f"{pair.url}/v1/chat/completions", headers=AUTH, json=body),
        httpx.post(f"{pair.url}/v1/chat/completions", json=body),
        httpx.get(f"{pair.url}/no-such-path"),
        httpx.get(f"{pair.admin}/healthz"),
    ]
    assert [r.status_code for r in answers] == [200, 401, 404, 200]
    for r in answers:
        assert "server" not in r.headers, r.headers
        assert "date" in r.headers


# -- 4. deadlines and caps -----------------------------------------------------


FAST = ServerLimits(max_connections=6, header_timeout=1.0, body_timeout=1.0)


@pytest.fixture
def strict(fakes: Fakes, router: Factory) -> RouterServer:
    doc = table(
        [provider("vllm", "vllm", fakes.vllm.url)],
        [model("chat", "vllm", "meta-llama/Llama-3.1-8B-Instruct")],
        routing={"maxInFlightPerKey": 2},
    )
    doc["apiKeys"] = [
        *api_keys(),
        {"name": "neighbour", "sha256": sha(NEIGHBOUR_KEY), "scopes": ["completion"]},
    ]
    return router(doc, FAST)


def refused(gw: RouterServer, reason: str) -> float:
    text = httpx.get(f"{gw.admin}/metrics").text
    m = re.search(rf'switchyard_connections_refused_total\{{reason="{reason}"\}} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def test_headers_trickled_a_byte_at_a_time_get_408(strict: RouterServer) -> None:
    with Raw(strict.url) as c:
        started = time.monotonic()
        finished = c.trickle(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, 0.1, 5)
        assert not finished  # cut off: a deadline for the whole head, not for each byte
        a = c.answer(3)
        assert a is not None and a.status == 408, a
        assert a.json()["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 3
    assert refused(strict, "header_timeout") == 1


def test_a_silent_connection_is_closed(strict: RouterServer) -> None:
    with Raw(strict.url) as c:
        started = time.monotonic()
        assert c.closed(5)
        assert c.answer(0.1) is None  # nothing was asked, so nothing is answered
        assert 0.9 < time.monotonic() - started < 3


def test_a_body_trickled_a_byte_at_a_time_gets_408(
    strict: RouterServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO), Raw(strict.url) as c:
        c.send(head)
        started = time.monotonic()
        assert not c.trickle(body, 0.1, 5)
        a = c.answer(3)
        assert a is not None and a.status == 408, a
        assert "body did not arrive within 1s" in a.json()["error"]["message"]
        assert time.monotonic() - started < 3
    assert refused(strict, "body_timeout") == 1
    time.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


def test_connections_beyond_the_cap_get_503(strict: RouterServer) -> None:
    held = [Raw(strict.url) for _ in range(6)]
    for c in held:
        c.send(b"GET /healthz HTTP/1.1\r\n")  # a head begun, never finished
    try:
        with Raw(strict.url) as extra:
            a = extra.answer(3)
            assert a is not None and a.status == 503, a
            assert a.json()["error"]["code"] == "too_many_connections"
            assert extra.closed()
    finally:
        for c in held:
            c.close()
    deadline = time.monotonic() + 5
    while httpx.get(f"{strict.admin}/healthz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert refused(strict, "too_many_connections") >= 1


@pytest.mark.parametrize("stream", [False, True])
def test_one_key_may_hold_only_its_share_in_flight(
    strict: RouterServer, fakes: Fakes, stream: bool
) -> None:
    fakes.vllm.push(Fault.stall(1.0), Fault.stall(1.0))
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    def ask(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{strict.url}/v1/chat/completions", headers=headers, json=body, timeout=10
        )

    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(ask, AUTH) for _ in range(2)]
        deadline = time.monotonic() + 5
        while fakes.vllm.completions < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = ask(AUTH)
        assert third.status_code == 429, third.text
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "too_many_in_flight"
        neighbour = ask(NEIGHBOUR)  # the organization's other keys are not held back
        assert neighbour.status_code == 200, neighbour.text
        assert all(f.result().status_code == 200 for f in slow)
    # Finished requests, streams included, give their places back.
    again = [ask(AUTH) for _ in range(3)]
    assert all(r.status_code == 200 for r in again), [r.text for r in again]
    text = httpx.get(f"{strict.admin}/metrics").text
    assert 'switchyard_in_flight_refused_total{organization="default"} 1.0' in text


# -- 6. error shapes and noise -------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"BREW /healthz HTCPCP/1.0\r\n\r\n",
    ],
)
def test_what_the_parser_rejects_gets_the_json_shape(pair: RouterServer, head: bytes) -> None:
    with Raw(pair.url) as c:
        c.send(head)
        a = c.answer()
        assert a is not None and a.status == 400, a
        assert a.headers["content-type"] == "application/json"
        err = a.json()["error"]
        assert err["code"] == "invalid_request"
        assert err["message"].startswith("malformed HTTP request: ")
        assert c.closed()


def test_a_client_leaving_mid_body_is_logged_at_info(
    pair: RouterServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        with Raw(pair.url) as c:
            c.send(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                f'Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n{{"model"'.encode()
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if "client left" in r.getMessage()]:
            assert time.monotonic() < deadline, caplog.records
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_errors_name_the_provider_not_its_address(fakes: Fakes, router: Factory) -> None:
    port = free_port()  # nothing listens there
    gw = router(
        table(
            [provider("local", "vllm", f"http://127.0.0.1:{port}/v1")],
            [model("chat", "local", "m")],
        )
    )
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        r = httpx.post(
            f"{gw.url}/v1/chat/completions", headers=AUTH, json=body | {"stream": stream}
        )
        assert r.status_code == 503, r.text
        assert str(port) not in r.text and "127.0.0.1" not in r.text
        assert "cannot connect to provider 'local'" in r.text
    # Who runs the router sees where: the provider's status names the address.
    probe = httpx.post(f"{gw.url}/api/v1/llm/providers/local/health-check", headers=AUTH)
    assert f"127.0.0.1:{port}" in probe.json()["message"]
