"""What must hold when clients leave, requests are refused, and tables change mid-flight."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}


def pair(fakes: Fakes, router: Factory, **routing: object) -> RouterServer:
    return router(
        table(
            [
                provider(
                    "primary", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY", priority=1
                ),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("chat", "primary", "gpt-4o-mini"),
                model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
            routing=routing,
        )
    )


def ask(gw: RouterServer, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        timeout=10,
        json={"model": "chat", "messages": [{"role": "user", "content": "hello there"}], **extra},
    )


def breaker(gw: RouterServer, name: str) -> dict:
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    return {p["name"]: p for p in providers}[name]


def metrics(gw: RouterServer) -> str:
    return httpx.get(f"{gw.admin}/metrics").text


def leave_mid_stream(gw: RouterServer) -> None:
    """Open a stream with a raw socket, read its first bytes, and hang up."""
    body = json.dumps(
        {
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": "one two three four five"}],
        }
    )
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        assert b"200 OK" in s.recv(4096)


def test_a_client_leaving_a_half_open_trial_does_not_lock_the_provider_out(
    fakes: Fakes, router: Factory
) -> None:
    gw = pair(fakes, router, breaker={"failureThreshold": 1, "cooldownSeconds": 0.3})
    fakes.openai.chunk_delay = 0.2  # the stream is still running when the client leaves
    try:
        fakes.openai.push(Fault.error(500))
        assert ask(gw).headers["x-switchyard-provider"] == "backup"
        assert breaker(gw, "primary")["circuitBreaker"] == "open"
        time.sleep(0.35)
        leave_mid_stream(gw)  # this was the half-open trial
        time.sleep(0.5)
    finally:
        fakes.openai.chunk_delay = 0.0
    r = ask(gw)
    assert r.headers["x-switchyard-provider"] == "primary", breaker(gw, "primary")
    assert breaker(gw, "primary")["circuitBreaker"] == "closed"


def test_the_clients_own_mistakes_do_not_open_the_breaker(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router, breaker={"failureThreshold": 2, "cooldownSeconds": 30})
    for _ in range(3):
        fakes.openai.push(Fault.error(400, message="bad tool schema"))
        assert ask(gw).status_code == 400
    assert breaker(gw, "primary")["circuitBreaker"] == "closed"
    assert ask(gw).headers["x-switchyard-provider"] == "primary"


def test_a_stream_survives_a_reload_that_removes_its_provider(
    fakes: Fakes, router: Factory
) -> None:
    gw = pair(fakes, router)
    fakes.openai.chunk_delay = 0.1
    try:
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            timeout=10,
            json={
                "model": "chat",
                "stream": True,
                "messages": [{"role": "user", "content": "a b c d e f"}],
            },
        ) as r:
            lines = r.iter_lines()
            first = next(lines)
            assert first.startswith("data: ")
            gw.rewrite(
                table(
                    [provider("backup", "vllm", fakes.vllm.url)],
                    [model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct")],
                )
            )
            rest = [line for line in lines if line]
    finally:
        fakes.openai.chunk_delay = 0.0
    assert rest[-1] == "data: [DONE]"
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in [first, *rest]
        if line.startswith("data: {")
    )
    assert text == "Echo: a b c d e f"
    assert ask(gw).headers["x-switchyard-provider"] == "backup"


def test_rejected_credentials_are_not_quoted_to_tenants(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [provider("p", "openai", fakes.openai.url, key_env="SY_TEST_AZURE_KEY")],
            [model("chat", "p", "gpt-4o-mini")],
        )
    )
    r = ask(gw)
    assert r.status_code == 503
    attempt = r.json()["error"]["attempts"][0]
    assert attempt["status"] == 401
    assert "rejected Switchyard's credentials" in attempt["message"]
    assert "456" not in r.text  # the end of the wrong key, which OpenAI quotes back


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
def test_a_client_leaving_mid_stream_hangs_up_on_the_provider_and_is_recorded(
    fakes: Fakes, router: Factory, surface: str
) -> None:
    """Relayed or not, a stream the client left stops costing: the provider is hung up
    on at its next chunk, the request is recorded as the client's leaving (499), and
    the key's in-flight slot is free again."""
    gw = pair(fakes, router)
    fakes.openai.chunk_delay = 0.1
    words = " ".join(f"w{i}" for i in range(40))
    path, extra = (
        ("/v1/chat/completions", {})
        if surface == "openai"
        else ("/v1/messages", {"max_tokens": 200})
    )
    body = json.dumps(
        {"model": "chat", "stream": True, "messages": [{"role": "user", "content": words}]} | extra
    )
    try:
        with socket.create_connection(("127.0.0.1", gw.port)) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                f"{body}".encode()
            )
            assert b"200 OK" in s.recv(4096)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not fakes.openai.streams_abandoned:
            time.sleep(0.05)
        assert fakes.openai.streams_abandoned == 1
    finally:
        fakes.openai.chunk_delay = 0.0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and 'status="499"' not in metrics(gw):
        time.sleep(0.05)
    assert 'status="499"' in metrics(gw)
    assert sum(gw.services.in_flight._counts.values()) == 0


def test_a_missing_model_is_taken_out_alone_not_its_provider(fakes: Fakes, router: Factory) -> None:
    """Ollama's 404 for a model it does not have is that model's failure: the provider's
    other models keep serving, and a group fails over without blaming the provider."""
    gw = router(
        table(
            [
                provider("ollama", "ollama", fakes.ollama.url, priority=1),
                provider("backup", "vllm", fakes.vllm.url, priority=2),
            ],
            [
                model("good", "ollama", "llama3.2"),
                model("bad", "ollama", "mistral-never-pulled"),
                model("grouped", "ollama", "also-not-pulled"),
                model("grouped", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
            ],
            routing={"maxAttempts": 2, "breaker": {"failureThreshold": 3, "cooldownSeconds": 60}},
        )
    )

    def ask_model(name: str) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
        )

    for _ in range(3):
        r = ask_model("bad")
        assert r.status_code == 503 and r.json()["error"]["attempts"][0]["status"] == 404
    r = ask_model("bad")
    assert r.status_code == 503 and "out for a while" in r.text
    assert 50 <= int(r.headers["Retry-After"]) <= 60
    assert ask_model("good").status_code == 200  # the provider serves on
    ollama = breaker(gw, "ollama")
    assert ollama["circuitBreaker"] == "closed" and ollama["modelsOut"] == ["bad"]
    # Why it went: the provider's own words (Ollama's "model ... not found").
    assert "mistral-never-pulled" in ollama["modelsOutReasons"]["bad"]
    assert ollama["lastFailure"] is None  # the provider itself is not to blame
    # In a group, the 404 fails over to the next candidate.
    r = ask_model("grouped")
    assert r.status_code == 200 and r.headers["x-switchyard-provider"] == "backup"


def test_a_model_that_cannot_take_tools_fails_over_without_blaming_its_provider(
    fakes: Fakes, router: Factory
) -> None:
    gw = pair(fakes, router, maxAttempts=2, breaker={"failureThreshold": 2, "cooldownSeconds": 60})
    fakes.openai.push(
        Fault.error(400, message="registry.ollama.ai/library/gemma:2b does not support tools")
    )
    r = ask(gw)
    assert r.status_code == 200 and r.headers["x-switchyard-provider"] == "backup"
    assert breaker(gw, "primary")["circuitBreaker"] == "closed"
    # The client's own mistake is still its own: no failover, no blame.
    fakes.openai.push(Fault.error(400, message="messages: invalid role"))
    assert ask(gw).status_code == 400
    assert breaker(gw, "primary")["circuitBreaker"] == "closed"
