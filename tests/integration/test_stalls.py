"""A provider that stops answering but keeps its connections open.

Before stall deadlines, every request sent to such a provider waited out the fixed
30 s first-token timeout; a client with a shorter timeout lost them all.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}
WARM_UP = 8


def pair(fakes: Fakes, router: Factory, **stall: object) -> RouterServer:
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
            routing={
                "breaker": {"failureThreshold": 3, "cooldownSeconds": 60},
                "stall": {"minSamples": WARM_UP, "floorMs": 200, **stall},
            },
        )
    )


def client(gw: RouterServer) -> openai.OpenAI:
    # A client that gives up long before the provider's fixed 30 s timeout.
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, timeout=3.0, max_retries=0)


def ask(c: openai.OpenAI, stream: bool) -> tuple[str, float]:
    """One request; the provider that served it and the seconds it took. A plain call's
    deadline grows with the output it asks for: these ask for a short answer."""
    started = time.perf_counter()
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        with c.chat.completions.with_streaming_response.create(
            model="chat",
            messages=messages,
            stream=True,  # type: ignore[arg-type]
            max_tokens=20,
        ) as raw:
            text = "".join(
                ch.choices[0].delta.content or ""
                for ch in raw.parse()
                if ch.choices and ch.choices[0].delta
            )
            assert text
            served_by = raw.headers["x-switchyard-provider"]
    else:
        raw = c.chat.completions.with_raw_response.create(
            model="chat",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=20,
        )
        assert raw.parse().choices[0].message.content
        served_by = raw.headers["x-switchyard-provider"]
    return served_by, time.perf_counter() - started


def providers(gw: RouterServer) -> dict[str, dict]:
    listing = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    return {p["name"]: p for p in listing}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_stalled_provider_is_passed_over_within_its_deadline_and_then_taken_out(
    fakes: Fakes, router: Factory, stream: bool
) -> None:
    gw = pair(fakes, router)
    c = client(gw)
    for _ in range(WARM_UP):
        assert ask(c, stream)[0] == "primary"
    fakes.openai.set_default(Fault.stall(6))  # the headers come after the client gave up
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: ask(c, stream), range(6)))
        assert {served for served, _ in results} == {"backup"}
        # Each waited a deadline (200 ms floor) plus the backup's answer, not 30 s.
        assert max(took for _, took in results) < 2.0, results
        assert providers(gw)["primary"]["circuitBreaker"] == "open"
        # With the breaker open the primary is not even tried: no deadline to wait.
        before = fakes.openai.completions
        assert ask(c, stream)[0] == "backup"
        assert fakes.openai.completions == before
    finally:
        fakes.openai.set_default(None)
    scraped = httpx.get(f"{gw.admin}/metrics").text
    assert 'switchyard_stalls_total{organization="default",provider="primary"}' in scraped


def test_a_slow_call_that_still_answers_first_is_used(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router)
    c = client(gw)
    for _ in range(WARM_UP):
        ask(c, False)
    fakes.openai.push(Fault.stall(0.5))  # past its deadline, but it does answer
    fakes.vllm.push(Fault.stall(2.5))  # the hedge is slower still
    served_by, took = ask(c, False)
    assert served_by == "primary"
    assert 0.5 <= took < 1.5
    assert providers(gw)["primary"]["circuitBreaker"] == "closed"


def test_without_hedging_the_stalled_call_is_given_up(fakes: Fakes, router: Factory) -> None:
    gw = pair(fakes, router, hedge=False)
    c = client(gw)
    for _ in range(WARM_UP):
        ask(c, False)
    fakes.openai.push(Fault.stall(0.6))
    fakes.vllm.push(Fault.stall(0.8))
    # The primary would have answered at 0.6 s, but it was given up at its deadline: the
    # backup's answer (0.2 s + 0.8 s) is the one used.
    served_by, took = ask(c, False)
    assert served_by == "backup"
    assert took >= 0.95
    assert providers(gw)["primary"]["consecutiveFailures"] == 1


def test_a_single_candidate_is_waited_for(fakes: Fakes, router: Factory) -> None:
    gw = router(
        table(
            [provider("only", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY")],
            [model("chat", "only", "gpt-4o-mini")],
            routing={"stall": {"minSamples": WARM_UP, "floorMs": 200}},
        )
    )
    c = client(gw)
    for _ in range(WARM_UP):
        ask(c, True)
    fakes.openai.push(Fault.stall(0.6))
    served_by, took = ask(c, True)
    assert served_by == "only" and took >= 0.6
    assert providers(gw)["only"]["circuitBreaker"] == "closed"
