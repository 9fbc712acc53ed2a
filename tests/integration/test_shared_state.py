"""Three router processes, one Redis, one PostgreSQL: one truth about providers.

Before shared state, each router process kept its own rate budgets and breakers: N
replicas sent N times a provider's limit, and each rediscovered an outage on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import Fault
from tests.fakes.model_server import FakeModelServer
from tests.integration.conftest import Fakes, fresh_database
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.servers import free_port, write_table
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}


class RouterProcess:
    """``switchyard router`` in a process of its own, as a replica runs."""

    def __init__(self, table_path: Path, state: Path, redis_url: str, database_url: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        state.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchyard.cli",
                "router",
                "--config",
                str(table_path),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--redis-url",
                redis_url,
                "--database-url",
                database_url,
                "--state-dir",
                str(state),
                "--log-level",
                "warning",
            ],
            env=dict(os.environ),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.admin}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("the router exited at start")
            time.sleep(0.05)
        raise RuntimeError("the router did not start")

    def shared_up(self) -> bool:
        text = httpx.get(f"{self.admin}/metrics", timeout=2).text
        return "switchyard_shared_state_up 1.0" in text

    def metric(self, line_start: str) -> float:
        """The value of the first series whose line begins so; 0 when there is none."""
        for line in httpx.get(f"{self.admin}/metrics", timeout=2).text.splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
        return 0.0

    def processes(self) -> float:
        """How many router processes this one counts on the shared state."""
        return self.metric("switchyard_shared_state_processes ")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def replicas(tmp_path: Path, redis: RedisServer, postgres: PostgresServer) -> Iterator[Any]:
    started: list[RouterProcess] = []

    def start(doc: dict[str, Any], n: int = 3) -> list[RouterProcess]:
        path = tmp_path / "table.yaml"
        write_table(path, doc)
        database_url = fresh_database(postgres)
        for i in range(n):
            started.append(RouterProcess(path, tmp_path / f"r{i}", redis.url, database_url))
        return started

    yield start
    for r in started:
        r.stop()


def ask(url: str, timeout: float = 10) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "hello"}]},
        timeout=timeout,
    )


def load(routers: list[RouterProcess], seconds: float, clients: int, pause: float) -> Counter[int]:
    """Many clients, round robin over the replicas, for ``seconds``: status counts."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(i: int) -> None:
        n = i
        with httpx.Client(headers=AUTH, timeout=10) as http:
            while time.monotonic() < end:
                r = http.post(
                    f"{routers[n % len(routers)].url}/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                )
                with lock:
                    statuses[r.status_code] += 1
                n += 1
                time.sleep(pause)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.timeout(240)
def test_three_replicas_keep_one_rate_limit(fakes: Fakes, replicas: Any) -> None:
    limited = provider(
        "primary",
        "openai",
        fakes.openai.url,
        key_env="SY_TEST_OPENAI_KEY",
        rateLimits={"requestsPerMinute": 100},
    )
    routers = replicas(table([limited], [model("chat", "primary", "gpt-4o-mini")]))
    before = fakes.openai.completions
    seconds = 120.0
    statuses = load(routers, seconds, clients=6, pause=0.1)
    sent = fakes.openai.completions - before
    # One process's budget of 100 a minute, full at the start, admits 100 + 100 a minute:
    # three replicas together must admit the same, not three times it.
    allowed = 100 + 100 * seconds / 60
    print(
        f"three replicas sent {sent} requests in {seconds:g} s; one process's budget: {allowed:g}"
    )
    assert statuses[200] == sent
    assert 0.95 * allowed <= sent <= allowed + 1, (sent, statuses)
    assert statuses[503] > 1000  # the rest were refused, not sent


def test_three_replicas_spend_no_more_than_a_budget(fakes: Fakes, replicas: Any) -> None:
    # $1,000 per million tokens: each answer costs about 3 cents of a 1 dollar budget.
    doc = table(
        [provider("primary", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY")],
        [
            model(
                "chat",
                "primary",
                "gpt-4o-mini",
                inputPricePer1MTokens="1000",
                outputPricePer1MTokens="1000",
            )
        ],
    )
    doc["budgets"] = [{"organization": "default", "dailyUsd": "1.00"}]
    doc["cache"] = {"enabled": False}
    routers = replicas(doc)
    costs: list[Decimal] = []
    refusals: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(headers=AUTH, timeout=10) as http:
            for n in range(i, i + 40):
                r = http.post(
                    f"{routers[n % len(routers)].url}/api/v1/llm/completion",
                    json={"taskType": "t", "prompt": "a b c d e f g h i j", "maxTokens": 20},
                )
                with lock:
                    if r.status_code == 200:
                        costs.append(Decimal(r.json()["cost"]["total"]))
                    else:
                        assert r.status_code == 429, r.text
                        refusals.append(r.json()["error"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = sum(costs, Decimal(0))
    print(f"three replicas answered {len(costs)} requests for {spent} USD of a 1 USD budget")
    # Together they spend what one process would: all of it, and not a cent more.
    assert Decimal("0.90") <= spent <= Decimal("1.00"), (spent, len(costs))
    assert refusals and {e["code"] for e in refusals} == {"budget_exceeded"}
    assert fakes.openai.completions >= len(costs)
    # The database, which every replica writes to, agrees.
    deadline = time.monotonic() + 10
    while True:
        usage = httpx.get(f"{routers[0].url}/api/v1/llm/usage", headers=AUTH).json()
        if Decimal(usage["totals"]["cost"]) == spent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert Decimal(usage["totals"]["cost"]) == spent, usage["totals"]


def primary_and_backup(fakes: Fakes) -> dict[str, Any]:
    """Model "chat" on a primary and a backup; the primary's breaker opens at two failures."""
    return table(
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
        routing={"breaker": {"failureThreshold": 2, "cooldownSeconds": 60}},
    )


def test_a_breaker_one_replica_opens_is_seen_by_the_others_within_a_second(
    fakes: Fakes, replicas: Any
) -> None:
    doc = primary_and_backup(fakes)
    a, b, c = replicas(doc)
    fakes.openai.push(Fault.error(500), Fault.error(500))
    for _ in range(2):
        assert ask(a.url).headers["x-switchyard-provider"] == "backup"
    opened = time.monotonic()

    def state(r: RouterProcess) -> str:
        listing = httpx.get(f"{r.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
        return str({p["name"]: p for p in listing}["primary"]["circuitBreaker"])

    seen: dict[int, float] = {}
    while len(seen) < 2 and time.monotonic() - opened < 5:
        for r in (b, c):
            if r.port not in seen and state(r) == "open":
                seen[r.port] = time.monotonic() - opened
        time.sleep(0.02)
    assert len(seen) == 2 and max(seen.values()) < 1.0, seen
    before = fakes.openai.completions
    assert ask(b.url).headers["x-switchyard-provider"] == "backup"
    assert fakes.openai.completions == before  # b never tried the broken provider


def listening(redis: RedisServer, replicas: int) -> None:
    """Wait until the replicas listen for news: a message nobody hears is lost."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        deadline = time.monotonic() + 10
        while (
            dict(client.pubsub_numsub("switchyard:breakers")).get(b"switchyard:breakers", 0)
            < replicas
        ):
            assert time.monotonic() < deadline, "the replicas did not subscribe to news"
            time.sleep(0.05)
    finally:
        client.close()


def test_news_from_outside_is_not_believed_and_garbage_does_not_stop_the_listener(
    fakes: Fakes, replicas: Any, redis: RedisServer
) -> None:
    """Anything that may publish on the Redis (another user of a shared one) could once
    take any organization's provider out on every replica, or stop the listener for good
    with one message that was not an object."""
    import orjson
    import redis as redis_py

    doc = primary_and_backup(fakes)
    a, b = replicas(doc, n=2)
    forged = {
        "provider": "default/primary",
        "open": True,
        "resume_in": 3600,
        "origin": "elsewhere",
        "at": time.time(),
    }
    listening(redis, 2)
    outsider = redis_py.Redis.from_url(redis.url)
    for garbage in (b"1", b"not json", b"{}", b"[]", orjson.dumps(forged), b"x" * 100_000):
        outsider.publish("switchyard:breakers", garbage)
    outsider.close()
    counted = (
        'switchyard_shared_state_news_refused_total{reason="unsigned"} 5.0',
        'switchyard_shared_state_news_refused_total{reason="malformed"} 1.0',
    )
    deadline = time.monotonic() + 5
    while not all(c in (refused := httpx.get(f"{b.admin}/metrics").text) for c in counted):
        assert time.monotonic() < deadline, refused
        time.sleep(0.05)

    def state(r: RouterProcess) -> str:
        listing = httpx.get(f"{r.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
        return str({p["name"]: p for p in listing}["primary"]["circuitBreaker"])

    assert state(a) == state(b) == "closed"
    assert ask(b.url).headers["x-switchyard-provider"] == "primary"
    # The listener lives on: a real opening on one replica still reaches the other.
    fakes.openai.push(Fault.error(500), Fault.error(500))
    for _ in range(2):
        assert ask(a.url).headers["x-switchyard-provider"] == "backup"
    deadline = time.monotonic() + 2
    while state(b) != "open":
        assert time.monotonic() < deadline, "the other replica never heard"
        time.sleep(0.02)


def test_a_conversation_placed_by_one_replica_is_found_through_another(
    replicas: Any, redis: RedisServer
) -> None:
    """Each replica remembers where it placed a conversation among a provider's
    endpoints; the others hear of it, so that a turn arriving through another replica
    goes to the endpoint holding its prefix, not to wherever that replica would place a
    new conversation."""
    servers = [FakeModelServer(slots=2, prefill_per_token=0.0, decode_per_token=0.0).start()]
    servers.append(FakeModelServer(slots=2, prefill_per_token=0.0, decode_per_token=0.0).start())
    try:
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        doc = table(
            [provider("pool", "vllm", "http://cluster.invalid:8000/v1", endpoints=addresses)],
            [model("llama", "pool", "meta-llama/Llama-3.1-8B-Instruct")],
        )
        a, b = replicas(doc, n=2)
        listening(redis, 2)
        learnt = 'switchyard_shared_state_placements_learnt_total{organization="default"'

        def turn(r: RouterProcess, i: int, turns: int) -> None:
            messages = [{"role": "system", "content": "shared rules"}]
            messages.append({"role": "user", "content": f"conversation {i}"})
            for t in range(1, turns):
                messages += [
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": f"turn {t}"},
                ]
            r_ = httpx.post(
                f"{r.url}/v1/chat/completions",
                headers=AUTH,
                json={"model": "llama", "messages": messages},
                timeout=10,
            )
            assert r_.status_code == 200, r_.text

        conversations = 12
        for i in range(conversations):
            turn(a, i, 1)
        deadline = time.monotonic() + 5
        while b.metric(learnt) < conversations:
            assert time.monotonic() < deadline, "the other replica did not hear every placement"
            time.sleep(0.05)
        for i in range(conversations):
            turn(b, i, 2)

        def endpoints(r: RouterProcess) -> dict[str, dict[str, Any]]:
            listing = httpx.get(f"{r.url}/api/v1/llm/providers", headers=AUTH).json()
            (pool,) = listing["providers"]
            return {e["address"]: e for e in pool["endpoints"]}

        placed, found = endpoints(a), endpoints(b)
        # Every second turn through b went where a had placed its conversation.
        for address in addresses:
            assert found[address]["affinityHits"] == placed[address]["picks"], (placed, found)
        assert sum(e["affinityHits"] for e in found.values()) == conversations
        assert a.metric(learnt) == 0  # a placed them: it learnt nothing of its own
    finally:
        for s in servers:
            s.stop()


def test_redis_killed_and_restarted_mid_load_fails_no_request(
    fakes: Fakes, replicas: Any, redis: RedisServer
) -> None:
    limited = provider(
        "primary",
        "openai",
        fakes.openai.url,
        key_env="SY_TEST_OPENAI_KEY",
        rateLimits={"requestsPerMinute": 1_000_000},
    )
    routers = replicas(table([limited], [model("chat", "primary", "gpt-4o-mini")]))
    assert all(r.shared_up() for r in routers)
    result: list[Counter[int]] = []
    loader = threading.Thread(target=lambda: result.append(load(routers, 8, 4, 0.01)))
    loader.start()
    time.sleep(2)
    redis.kill()
    time.sleep(2)
    assert not any(r.shared_up() for r in routers)  # they noticed, and served on
    redis.start()
    loader.join()
    statuses = result[0]
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 100
    deadline = time.monotonic() + 10
    while not all(r.shared_up() for r in routers):
        assert time.monotonic() < deadline, "the replicas did not rejoin the shared state"
        time.sleep(0.1)


def test_while_redis_is_away_each_replica_keeps_its_share_of_a_limit(
    fakes: Fakes, replicas: Any, redis: RedisServer
) -> None:
    limited = provider(
        "primary",
        "openai",
        fakes.openai.url,
        key_env="SY_TEST_OPENAI_KEY",
        rateLimits={"requestsPerMinute": 60},
    )
    routers = replicas(table([limited], [model("chat", "primary", "gpt-4o-mini")]))
    deadline = time.monotonic() + 10
    while not all(r.processes() == 3 for r in routers):
        assert time.monotonic() < deadline, [r.processes() for r in routers]
        time.sleep(0.2)
    redis.kill()
    before = fakes.openai.completions
    seconds = 6.0
    statuses = load(routers, seconds, clients=6, pause=0.05)
    sent = fakes.openai.completions - before
    # Each replica keeps 20 of the 60 a minute: together, one process's budget
    # (60 at once, then one a second), where each alone would send it all.
    allowed = 60 + 60 * seconds / 60
    print(f"three replicas without Redis sent {sent} in {seconds:g} s; one budget: {allowed:g}")
    assert statuses[200] == sent
    assert 0.8 * allowed <= sent <= allowed + 3, (sent, statuses)
