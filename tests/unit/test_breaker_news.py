"""News on the shared state (breakers, placements) is believed only when signed, recent
and well formed."""

from __future__ import annotations

import time

import orjson

from switchyard.router.metrics import Metrics
from switchyard.router.storage.shared_state import SharedState


def state(url: str = "redis://:secret@127.0.0.1:6379/0") -> SharedState:
    return SharedState(url, Metrics(), lambda news: None)


def news(**extra: object) -> dict[str, object]:
    return {"provider": "team-a/openai", "open": True, "origin": "o", "at": time.time(), **extra}


def refused(s: SharedState) -> dict[str, float]:
    """The refusal counts, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for m in s.metrics.registry.collect()
        if m.name == "switchyard_shared_state_news_refused"
        for sample in m.samples
        if sample.name.endswith("_total")
    }


def test_a_replicas_news_is_read_back() -> None:
    s = state()
    sent = news(resume_in=5)
    assert s._read(s._sign(orjson.dumps(sent))) == sent
    placed = news(placed={"key": 2**64 - 1, "address": "[fd00::7]:8000", "slot": 3})
    assert s._read(s._sign(orjson.dumps(placed))) == placed
    assert refused(s) == {}


def test_news_signed_for_another_deployment_or_replayed_or_odd_is_refused() -> None:
    s = state()
    other = state("redis://:another-password@127.0.0.1:6379/0")
    assert s._read(other._sign(orjson.dumps(news()))) is None  # another URL's key
    assert s._read(s._sign(orjson.dumps(news(at=time.time() - 60)))) is None  # replayed
    for odd in (
        news(provider="not a provider"),
        news(open="yes"),
        news(resume_in=-1),
        news(resume_in=10**9),
        news(at="now"),
        news(placed={"key": -1, "address": "10.0.0.1:80"}),
        news(placed={"key": "1", "address": "10.0.0.1:80"}),
        news(placed={"key": 1, "address": "http://evil/path"}),
        news(placed={"key": 1}),
        news(placed=[1, "10.0.0.1:80"]),
        news(placed={"key": 1, "address": "10.0.0.1:80", "slot": -1}),
        news(placed={"key": 1, "address": "10.0.0.1:80", "slot": True}),
        [1, 2],
    ):
        assert s._read(s._sign(orjson.dumps(odd))) is None, odd
    assert s._read(b"1") is None and s._read("text") is None
    assert refused(s) == {"unsigned": 2, "stale": 1, "malformed": 14}
