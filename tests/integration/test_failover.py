"""Failover across candidates, the circuit breaker, Retry-After and timeouts."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import KEYS, Fakes
from tests.support.servers import RouterServer, free_port
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}
FAST = {"connectMs": 500, "firstTokenMs": 400, "totalMs": 800}


def group(fakes: Fakes, router: Factory, primary: str, **routing: object) -> RouterServer:
    """Model "chat" on a primary provider and, as fallback, on the vLLM fake."""
    upstream = {
        "openai": ("openai", fakes.openai.url, "gpt-4o-mini", "SY_TEST_OPENAI_KEY"),
        "anthropic": (
            "anthropic",
            fakes.anthropic.url,
            "claude-haiku-4-5",
            "SY_TEST_ANTHROPIC_KEY",
        ),
        "ollama": ("ollama", fakes.ollama.url, "llama3.2", None),
        "azure": ("azure_openai", fakes.azure.url, "gpt-4o-mini-deploy", "SY_TEST_AZURE_KEY"),
    }[primary]
    kind, url, upstream_model, env = upstream
    return router(
        table(
            [
                provider(primary, kind, url, key_env=env, priority=1, timeouts=FAST),
                provider("backup", "vllm", fakes.vllm.url, priority=2, timeouts=FAST),
            ],
            [
                model("chat", primary, upstream_model),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
            routing={"breaker": {"failureThreshold": 3, "cooldownSeconds": 0.5}, **routing},
        )
    )


def ask(gw: RouterServer, stream: bool = False, content: str = "hi") -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "chat",
            "messages": [{"role": "user", "content": content}],
            "stream": stream,
        },
        timeout=10,
    )


FAULTS = [
    Fault.error(500),
    Fault.error(502),
    Fault.error(503),
    Fault.error(429, retry_after=0.2),
    Fault.reset(),
    Fault.stall(1.0),
    Fault.cut(after_chunks=1),
]


# A stream cut after its first byte cannot fail over: tested on its own below.
MATRIX = [
    pytest.param(
        fault,
        stream,
        id=f"{'sse' if stream else 'json'}-{fault.kind}-"
        f"{fault.status or fault.seconds or fault.after_chunks or ''}",
    )
    for fault in FAULTS
    for stream in (False, True)
    if not (stream and fault.kind == "cut")
]


@pytest.mark.parametrize("primary", ["openai", "anthropic", "ollama", "azure"])
@pytest.mark.parametrize(("fault", "stream"), MATRIX)
def test_failover_matrix(
    fakes: Fakes, router: Factory, primary: str, fault: Fault, stream: bool
) -> None:
    gw = group(fakes, router, primary)
    up = fakes.by_provider(primary)
    up.push(fault)
    r = ask(gw, stream)
    assert r.status_code == 200, r.text
    assert up.completions == 1
    assert fakes.vllm.completions == 1
    assert r.headers["x-switchyard-provider"] == "backup"
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")
        assert (
            "".join(
                json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in r.text.splitlines()
                if line.startswith("data: {") and json.loads(line[6:])["choices"]
            )
            == "Echo: hi"
        )
    else:
        assert r.json()["choices"][0]["message"]["content"] == "Echo: hi"


def test_client_errors_do_not_fail_over(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "openai")
    fakes.openai.push(Fault.error(400, message="bad thing"))
    r = ask(gw)
    assert r.status_code == 400
    assert fakes.vllm.completions == 0
    assert "bad thing" in r.json()["error"]["message"]


def test_every_candidate_failing_is_a_503_listing_attempts(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "anthropic")
    fakes.anthropic.push(Fault.error(529))
    fakes.vllm.push(Fault.error(500))
    r = ask(gw)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_candidate_available"
    attempts = err["attempts"]
    assert [(a["provider"], a["status"], a["error"]) for a in attempts] == [
        ("anthropic", 529, "upstream_status_error"),
        ("backup", 500, "upstream_status_error"),
    ]
    assert "overloaded_error" in attempts[0]["message"]
    for secret in KEYS.values():
        assert secret not in r.text


def test_connect_errors_fail_over(fakes: Fakes, router: Factory) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = router(
        table(
            [
                provider("dead", "vllm", dead, priority=1, timeouts=FAST),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("chat", "dead", "x"),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
        )
    )
    r = ask(gw)
    assert r.status_code == 200 and r.headers["x-switchyard-provider"] == "backup"
    r = httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "t", "prompt": "x", "model": "chat"},
    )
    assert r.json()["failedAttempts"][0]["error"] == "upstream_connect_error"


def test_breaker_opens_half_opens_and_closes(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "openai")
    fakes.openai.set_default(Fault.error(500))
    for _ in range(3):
        assert ask(gw).status_code == 200
    assert fakes.openai.completions == 3
    # Open: the primary is not even tried.
    for _ in range(5):
        assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert fakes.openai.completions == 3
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    state = {p["name"]: p for p in providers}
    assert state["openai"]["circuitBreaker"] == "open"
    assert state["openai"]["consecutiveFailures"] == 3
    metrics = httpx.get(f"{gw.admin}/metrics").text
    assert 'switchyard_breaker_state{organization="default",provider="openai"} 1.0' in metrics
    # Half-open after the cooldown: one trial; it fails, so open again.
    time.sleep(0.6)
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert fakes.openai.completions == 4
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert fakes.openai.completions == 4
    # The provider recovers; the next trial closes the breaker.
    fakes.openai.set_default(None)
    time.sleep(0.6)
    assert ask(gw).headers["x-switchyard-provider"] == "openai"
    assert ask(gw).headers["x-switchyard-provider"] == "openai"
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    assert {p["name"]: p for p in providers}["openai"]["circuitBreaker"] == "closed"


def test_retry_after_is_respected(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "openai")
    fakes.openai.push(Fault.error(429, retry_after=1))
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert fakes.openai.completions == 1
    time.sleep(1.1)
    assert ask(gw).headers["x-switchyard-provider"] == "openai"


def test_retry_after_as_an_http_date_is_respected(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "anthropic")
    fakes.anthropic.push(Fault.error(429, retry_after=3, as_date=True))
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    time.sleep(0.5)  # the date is 2 to 3 s ahead (HTTP dates count whole seconds)
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert fakes.anthropic.completions == 1
    time.sleep(2.7)
    assert ask(gw).headers["x-switchyard-provider"] == "anthropic"


def test_retry_after_is_capped_by_the_table(fakes: Fakes, router: Factory) -> None:
    gw = group(fakes, router, "openai", maxRetryAfterSeconds=1)
    fakes.openai.push(Fault.error(429, retry_after=3600))
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    assert ask(gw).headers["x-switchyard-provider"] == "backup"
    time.sleep(1.1)  # held back for the table's cap, not the provider's hour
    assert ask(gw).headers["x-switchyard-provider"] == "openai"


def test_a_stream_cut_after_its_first_byte_ends_with_an_error(
    fakes: Fakes, router: Factory
) -> None:
    gw = group(fakes, router, "openai")
    fakes.openai.push(Fault.cut(after_chunks=2))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="closed the connection"):
        for chunk in client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "one two three"}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received  # the client had bytes, so no failover happened
    assert fakes.vllm.completions == 0


@pytest.mark.parametrize("primary", ["openai", "anthropic", "ollama"])
def test_a_stream_that_stops_mid_way_ends_after_its_first_token_timeout(
    fakes: Fakes, router: Factory, primary: str
) -> None:
    """No byte for firstTokenMs ends a stream mid-way, long before its total timeout."""
    env = {"openai": "SY_TEST_OPENAI_KEY", "anthropic": "SY_TEST_ANTHROPIC_KEY"}.get(primary)
    kind, upstream = {
        "openai": ("openai", "gpt-4o-mini"),
        "anthropic": ("anthropic", "claude-haiku-4-5"),
        "ollama": ("ollama", "llama3.2"),
    }[primary]
    slow = {"connectMs": 500, "firstTokenMs": 300, "totalMs": 20_000}
    gw = router(
        table(
            [provider(primary, kind, fakes.by_provider(primary).url, key_env=env, timeouts=slow)],
            [model("chat", primary, upstream)],
        )
    )
    fake = fakes.by_provider(primary)
    # Chunks 50 ms apart arrive a read each, and the gap after the fifth is watched by
    # the router's own timer (``providers.read_watch``) alone, not aiohttp's.
    fake.chunk_delay = 0.05
    words = "one two three four five six seven eight nine ten eleven twelve"
    try:
        # Steady chunks for longer than firstTokenMs in all: the stream runs to its end.
        steady = ask(gw, stream=True, content=words)
        assert steady.text.rstrip().endswith("data: [DONE]")
        assert "error" not in steady.text, steady.text[-300:]
        fake.push(Fault.stall_mid(5, 5))
        started = time.perf_counter()
        r = ask(gw, stream=True, content=words)
        took = time.perf_counter() - started
    finally:
        fake.chunk_delay = 0.0
    assert r.status_code == 200
    assert 0.3 <= took < 2.0, took
    last = [line for line in r.text.splitlines() if line.startswith("data: ")][-1]
    error = json.loads(last[6:])["error"]
    assert error["code"] == "upstream_timeout" and "stalled" in error["message"], error


@pytest.mark.parametrize("primary", ["openai", "anthropic", "ollama"])
def test_in_stream_provider_errors_reach_the_client(
    fakes: Fakes, router: Factory, primary: str
) -> None:
    gw = group(fakes, router, primary)
    fakes.by_provider(primary).push(Fault.stream_error(after_chunks=1))
    r = ask(gw, stream=True)
    assert r.status_code == 200
    last = [line for line in r.text.splitlines() if line.startswith("data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == "upstream_status_error"


def test_rate_limit_budget_skips_the_provider(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [
                provider(
                    "openai",
                    "openai",
                    fakes.openai.url,
                    key_env="SY_TEST_OPENAI_KEY",
                    priority=1,
                    rateLimits={"requestsPerMinute": 2},
                ),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("chat", "openai", "gpt-4o-mini"),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
        )
    )
    served = [ask(gw).headers["x-switchyard-provider"] for _ in range(4)]
    assert served == ["openai", "openai", "backup", "backup"]
    assert fakes.openai.completions == 2


def test_tokens_per_minute_budget(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [
                provider(
                    "openai",
                    "openai",
                    fakes.openai.url,
                    key_env="SY_TEST_OPENAI_KEY",
                    priority=1,
                    rateLimits={"tokensPerMinute": 1000},
                ),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("chat", "openai", "gpt-4o-mini"),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
        )
    )

    def call() -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            json={
                "model": "chat",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "word " * 300}],
            },
        )

    # Each call reserves its estimate (~530 tokens) and is charged what the
    # provider reports (~310), so two fit in 1000 tokens a minute and a third does not.
    first = call()
    assert first.json()["usage"]["prompt_tokens"] == 304
    assert [first.headers["x-switchyard-provider"]] + [
        call().headers["x-switchyard-provider"] for _ in range(2)
    ] == ["openai", "openai", "backup"]
