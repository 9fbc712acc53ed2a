"""The workload that shows how calls to a model server's replicas are spread:
multi-turn conversations that share a long system prompt, and short one-off requests,
each turn streamed through the official ``openai`` SDK so that the time to the first
token is the client's own.

Used by ``tests/integration/test_balance.py`` (on the faithful fakes) and by
``./dev bench balance`` (on the fakes, or on real llama.cpp servers)."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import openai


def system_prompt(words: int) -> str:
    """Shared by every conversation."""
    rng = random.Random(1)
    vocab = [
        "gateway",
        "route",
        "model",
        "replica",
        "cache",
        "prompt",
        "token",
        "tenant",
        "budget",
        "request",
        "answer",
        "stream",
        "latency",
        "queue",
        "provider",
        "cluster",
        "service",
        "endpoint",
        "policy",
    ]
    return "You are the operations assistant. Rules: " + " ".join(
        rng.choice(vocab) for _ in range(words)
    )


def conversation_start(i: int, words: int) -> str:
    """Conversation ``i``'s first message: a log of its own to read."""
    rng = random.Random(100 + i)
    return f"Conversation {i}. Read this log: " + " ".join(
        f"fact{rng.randrange(10_000)}" for _ in range(words)
    )


def warm_slots(roots: list[str], slots: int, system: str) -> None:
    """Every slot of the llama.cpp servers at ``roots`` computes the shared system prompt,
    as on servers that have served a while: one request per slot, naming it, the
    servers side by side. A fresh server's slots are empty and each computes the system
    prompt the first time it is used; a bench that began there would measure that
    warm-up, which a long-running server pays once."""

    failed: list[BaseException] = []

    def warm(root: str) -> None:
        try:
            send(root)
        except BaseException as exc:  # raised below, once every server was tried
            failed.append(exc)

    def send(root: str) -> None:
        for slot in range(slots):
            r = httpx.post(
                f"{root}/v1/chat/completions",
                json={
                    "model": "warm-up",
                    "max_tokens": 1,
                    "id_slot": slot,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": "Ready?"},
                    ],
                },
                timeout=300,
            )
            r.raise_for_status()

    threads = [threading.Thread(target=warm, args=(root,)) for root in roots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise RuntimeError(f"warming the slots failed: {failed[0]}") from failed[0]


@dataclass
class Results:
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    elapsed: float = 0.0
    #: Every answered request: what it was, when it began (seconds in) and its TTFT.
    samples: list[tuple[str, float, float]] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self, ttft: float | None, failure: str | None = None, what: str = "", at: float = 0.0
    ) -> None:
        with self.lock:
            self.requests += 1
            if ttft is not None:
                self.samples.append((what, at - self.began, ttft))
            if failure is not None:
                self.failures.append(failure)

    @property
    def ttft(self) -> list[float]:
        """Seconds to the first token, every answered turn and one-off."""
        return [ttft for _, _, ttft in self.samples]

    def slowest(self, n: int) -> list[tuple[str, float, float]]:
        return sorted(self.samples, key=lambda s: -s[2])[:n]

    def percentile(self, q: float) -> float:
        ttft = self.ttft
        if not ttft:
            return float("nan")
        if len(ttft) == 1:
            return ttft[0]
        return statistics.quantiles(ttft, n=100, method="inclusive")[int(q) - 1]


def _turn(
    client: openai.OpenAI,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    headers: dict[str, str],
) -> tuple[float, str]:
    started = time.perf_counter()
    first: float | None = None
    text = []
    stream = client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        stream=True,
        extra_headers=headers,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            text.append(chunk.choices[0].delta.content)
    return (first if first is not None else time.perf_counter() - started), "".join(text)


def run(
    make_client: Callable[[], openai.OpenAI],
    model: str,
    *,
    conversations: int = 6,
    turns: int = 4,
    oneoffs: int = 12,
    system_words: int = 1100,
    document_words: int = 500,
    max_tokens: int = 8,
    think: float = 0.05,
    continue_streams: bool = True,
    stagger: float = 0.0,
    oneoff_every: float = 0.0,
    during: Callable[[float], None] | None = None,
) -> Results:
    """Every conversation in its own thread (its turns one after another, ``think``
    seconds apart), and the one-offs spread over the same time from another.
    ``stagger``: conversation ``i`` begins ``i * stagger`` seconds in (0: all at once,
    a burst that every replica meets with a cold cache).
    ``oneoff_every``: one-off ``j`` is sent ``j * oneoff_every`` seconds in, whether or
    not the one before was answered (open loop); 0: one after another.
    ``during``: called with the seconds elapsed, between one-offs (a replica may be
    killed there)."""
    system = system_prompt(system_words)
    results = Results()
    headers = {"X-Switchyard-Continue-Streams": "true"} if continue_streams else {}

    def conversation(i: int) -> None:
        time.sleep(i * stagger)
        client = make_client()
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": conversation_start(i, document_words)},
        ]
        for t in range(turns):
            at = time.perf_counter()
            try:
                ttft, answer = _turn(client, model, messages, max_tokens, headers)
            except openai.OpenAIError as exc:
                results.add(None, f"conversation {i} turn {t}: {exc}")
                return
            results.add(ttft, what=f"conversation {i} turn {t}", at=at)
            messages += [
                {"role": "assistant", "content": answer or "ok"},
                {"role": "user", "content": f"And then, step {t + 1}?"},
            ]
            time.sleep(think)

    def oneoff(client: openai.OpenAI, j: int) -> None:
        at = time.perf_counter()
        try:
            ttft, _ = _turn(
                client,
                model,
                [{"role": "system", "content": system}, {"role": "user", "content": f"Q{j}?"}],
                max_tokens,
                headers,
            )
            results.add(ttft, what=f"one-off {j}", at=at)
        except openai.OpenAIError as exc:
            results.add(None, f"one-off {j}: {exc}")

    def oneoff_loop(started: float) -> None:
        client = make_client()
        sent: list[threading.Thread] = []
        for j in range(oneoffs):
            if oneoff_every > 0:
                time.sleep(max(0.0, started + j * oneoff_every - time.perf_counter()))
                sent.append(threading.Thread(target=oneoff, args=(client, j)))
                sent[-1].start()
            else:
                oneoff(client, j)
            if during is not None:
                during(time.perf_counter() - started)
            if oneoff_every <= 0:
                time.sleep(think * 2)
        for t in sent:
            t.join()

    started = results.began = time.perf_counter()
    threads = [threading.Thread(target=conversation, args=(i,)) for i in range(conversations)]
    threads.append(threading.Thread(target=oneoff_loop, args=(started,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.elapsed = time.perf_counter() - started
    return results
