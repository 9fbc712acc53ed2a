"""Traces, as a real OpenTelemetry Collector receives them from a router: a span per
request, a span per provider call under it, W3C trace context followed in and passed
on, GenAI attributes, and content only when the table allows it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from switchyard.router.tracing import TraceConfig
from tests.fakes import Fault
from tests.integration.conftest import Fakes
from tests.support.collector import Collector, Span
from tests.support.servers import RouterServer, write_table
from tests.support.tables import KEY, model, provider, table
from tests.support.usage_rows import wait_rows

AUTH = {"Authorization": f"Bearer {KEY}"}
FAST = {"connectMs": 500, "firstTokenMs": 400, "totalMs": 800}
SERVER, CLIENT = 2, 3  # OTLP span kinds


def _table(fakes: Fakes, **routing: Any) -> dict[str, Any]:
    """Model "chat" on OpenAI first and the vLLM fake as fallback."""
    return table(
        [
            provider("primary", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY",
                     priority=1, timeouts=FAST),
            provider("backup", "vllm", fakes.vllm.url, priority=2, timeouts=FAST),
        ],
        [
            model("chat", "primary", "gpt-4o-mini"),
            model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
        ],
        routing={"breaker": {"failureThreshold": 50}, **routing},
    )  # fmt: skip


def _start(tmp_path: Path, doc: dict[str, Any], collector: Collector | None, ratio: float = 1.0
           ) -> RouterServer:  # fmt: skip
    path = tmp_path / f"table-{secrets.token_hex(3)}.yaml"
    write_table(path, doc)
    config = TraceConfig(collector.endpoint, ratio) if collector is not None else None
    return RouterServer(path, tracing=config).start()


@pytest.fixture
def traced(fakes: Fakes, collector: Collector, tmp_path: Path) -> Iterator[RouterServer]:
    server = _start(tmp_path, _table(fakes), collector)
    yield server
    server.stop()


def _trace(spans: list[Span], trace_id: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


def _parent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _await_request(collector: Collector, trace_id: str, calls: int) -> tuple[Span, list[Span]]:
    spans = collector.wait_for(
        f"request span with {calls} call spans in trace {trace_id}",
        lambda got: (
            sum(1 for s in _trace(got, trace_id) if s.kind == SERVER) == 1
            and sum(1 for s in _trace(got, trace_id) if s.kind == CLIENT) >= calls
        ),
    )
    mine = _trace(spans, trace_id)
    [server] = [s for s in mine if s.kind == SERVER]
    calls_made = sorted((s for s in mine if s.kind == CLIENT), key=lambda s: s.attributes[
        "switchyard.attempt.number"])  # fmt: skip
    return server, calls_made


def test_a_failover_is_two_call_spans_under_the_clients_trace(
    fakes: Fakes, collector: Collector, traced: RouterServer
) -> None:
    trace_id, parent_span, traceparent = _parent()
    fakes.openai.push(Fault.error(503, message="overloaded"))
    client = openai.OpenAI(base_url=f"{traced.url}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=64,
        temperature=0.5,
        extra_headers={"traceparent": traceparent, "tracestate": "agent=planner"},
    )
    assert answer.choices[0].message.content == "Echo: hi"
    server, calls = _await_request(collector, trace_id, 2)

    # The client's span is the request's parent; the calls are the request's children.
    assert server.parent_span_id == parent_span
    assert server.service == "switchyard-router"
    assert server.name == "POST /v1/chat/completions"
    assert [c.parent_span_id for c in calls] == [server.span_id, server.span_id]
    first, second = calls
    assert first.name == "chat gpt-4o-mini"
    assert first.attributes["gen_ai.provider.name"] == "openai"
    assert first.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert first.attributes["gen_ai.request.max_tokens"] == 64
    assert first.attributes["gen_ai.request.temperature"] == 0.5
    assert first.attributes["switchyard.attempt.kind"] == "primary"
    assert first.attributes["switchyard.attempt.outcome"] == "failed"
    assert first.attributes["error.type"] == "upstream_status_error"
    assert first.attributes["http.response.status_code"] == 503
    assert "overloaded" in first.attributes["switchyard.failure.reason"]
    assert first.status.get("code") == 2  # STATUS_CODE_ERROR
    assert second.name == "chat meta-llama/Llama-3.1-8B-Instruct"
    assert second.attributes["gen_ai.provider.name"] == "vllm"
    assert second.attributes["switchyard.attempt.kind"] == "failover"
    assert second.attributes["switchyard.attempt.outcome"] == "won"
    assert second.attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert second.attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert second.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "error.type" not in second.attributes

    # The request's own span: who asked, what answered, what it cost, why that route.
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "chat"
    assert a["switchyard.organization"] == "default"
    assert a["switchyard.provider"] == "backup"
    assert a["switchyard.cache_hit"] is False
    assert a["switchyard.attempts_failed"] == 1
    assert a["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    expected_cost = (answer.usage.prompt_tokens * 1.0 + answer.usage.completion_tokens * 2.0) / 1e6
    assert a["switchyard.cost_usd"] == pytest.approx(expected_cost)
    assert a["switchyard.route.reason"].startswith("model 'chat' named; ranked by")
    assert "primary/chat, backup/chat" in a["switchyard.route.reason"]
    assert "gen_ai.input.messages" not in a  # content is off unless the table says so

    # Each provider was called in its own call's context, tracestate passed on.
    sent = [fakes.openai.requests[-1].headers, fakes.vllm.requests[-1].headers]
    assert [h["traceparent"] for h in sent] == [
        f"00-{trace_id}-{first.span_id}-01",
        f"00-{trace_id}-{second.span_id}-01",
    ]
    assert {h.get("tracestate") for h in sent} == {"agent=planner"}


def test_a_stream_span_stays_open_to_its_last_chunk(
    fakes: Fakes, collector: Collector, traced: RouterServer
) -> None:
    trace_id, _, traceparent = _parent()
    client = anthropic.Anthropic(base_url=traced.url, api_key=KEY, max_retries=0)
    with client.messages.stream(
        model="chat",
        max_tokens=32,
        messages=[{"role": "user", "content": "stream me"}],
        extra_headers={"traceparent": traceparent},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: stream me"
    server, [call] = _await_request(collector, trace_id, 1)
    assert server.attributes["switchyard.stream"] is True
    assert server.attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert call.attributes["switchyard.attempt.outcome"] == "won"
    assert call.attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    # Time to first token: an event on both spans, before each ends.
    for span in (server, call):
        [first] = [e for e in span.events if e["name"] == "gen_ai.first_token"]
        assert int(first["timeUnixNano"]) > 0
    assert server.attributes["switchyard.ttft_ms"] > 0


def test_content_is_captured_only_when_the_table_says_so(
    fakes: Fakes, collector: Collector, tmp_path: Path
) -> None:
    server = _start(tmp_path, _table(fakes, tracing={"captureContent": True}), collector)
    try:
        trace_id, _, traceparent = _parent()
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers=AUTH | {"traceparent": traceparent},
            json={"model": "chat", "messages": [{"role": "user", "content": "secret plan"}]},
        )
        assert r.status_code == 200, r.text
        span, _ = _await_request(collector, trace_id, 1)
        asked = json.loads(span.attributes["gen_ai.input.messages"])
        assert asked == [{"role": "user", "parts": [{"type": "text", "content": "secret plan"}]}]
        said = json.loads(span.attributes["gen_ai.output.messages"])
        assert said[0]["parts"][0]["content"] == "Echo: secret plan"
    finally:
        server.stop()


def test_refused_and_unsampled_requests(
    fakes: Fakes, collector: Collector, traced: RouterServer, tmp_path: Path
) -> None:
    # A refused request is a span too, with the reason.
    trace_id, _, traceparent = _parent()
    r = httpx.post(
        f"{traced.url}/v1/chat/completions",
        headers=AUTH | {"traceparent": traceparent},
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404
    spans = collector.wait_for("the refused request", lambda got: bool(_trace(got, trace_id)))
    [span] = _trace(spans, trace_id)
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["error.type"] == "not_found"

    # A client that decided not to sample: no span, its traceparent passed on as it came.
    unsampled = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    r = httpx.post(
        f"{traced.url}/v1/chat/completions",
        headers=AUTH | {"traceparent": unsampled},
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200
    assert fakes.openai.requests[-1].headers["traceparent"] == unsampled

    # A router that does not trace passes the client's context on unchanged too.
    plain = _start(tmp_path, _table(fakes), None)
    try:
        _, _, sampled = _parent()
        r = httpx.post(
            f"{plain.url}/v1/chat/completions",
            headers=AUTH | {"traceparent": sampled, "tracestate": "a=b"},
            json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 200
        headers = fakes.openai.requests[-1].headers
        assert (headers["traceparent"], headers["tracestate"]) == (sampled, "a=b")
    finally:
        plain.stop()
    # Neither became a span (the refused one above is the only one of those traces).
    assert not _trace(collector.spans(), unsampled.split("-")[1])


def test_the_sample_ratio_decides_for_requests_without_a_parent(
    fakes: Fakes, collector: Collector, tmp_path: Path
) -> None:
    never = _start(tmp_path, _table(fakes), collector, ratio=0.0)
    always = _start(tmp_path, _table(fakes), collector, ratio=1.0)
    try:
        before = {s.trace_id for s in collector.spans()}
        body = {"model": "chat", "messages": [{"role": "user", "content": "ratio"}]}
        for _ in range(5):
            assert httpx.post(f"{never.url}/v1/chat/completions", headers=AUTH, json=body)
        r = httpx.post(f"{always.url}/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == 200
        new = collector.wait_for(
            "the one traced request",
            lambda got: any(s.kind == SERVER and s.trace_id not in before for s in got),
        )
        servers = [s for s in new if s.kind == SERVER and s.trace_id not in before]
        assert len(servers) == 1
        # Its call carried its own context to the provider.
        assert fakes.openai.requests[-1].headers["traceparent"].split("-")[1] == (
            servers[0].trace_id
        )
        # Its usage record names its trace; the untraced requests' name none.
        [record] = wait_rows(None, always.state_dir, 1)
        assert record["trace_id"] == servers[0].trace_id
        untraced = wait_rows(None, never.state_dir, 5)
        assert [r["trace_id"] for r in untraced] == [None] * 5
    finally:
        never.stop()
        always.stop()


def test_a_hedge_is_a_call_span_and_the_loser_says_it_was_billed(
    fakes: Fakes, collector: Collector, tmp_path: Path
) -> None:
    """A stalled primary is hedged: the backup's call is a ``hedge`` span that won, and the
    primary's call, which answered later and was billed, ends ``hedged`` with its tokens."""
    doc = _table(fakes, stall={"minSamples": 8, "floorMs": 200})
    for p in doc["providers"]:
        p.pop("timeouts")
    server = _start(tmp_path, doc, collector)
    try:
        body = {
            "model": "chat",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hedge"}],
        }
        for _ in range(8):
            r = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, json=body)
            assert r.headers["x-switchyard-provider"] == "primary"
        fakes.openai.push(Fault.stall(0.8))
        trace_id, _, traceparent = _parent()
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers=AUTH | {"traceparent": traceparent},
            json=body,
            timeout=10,
        )
        assert r.headers["x-switchyard-provider"] == "backup"
        _, calls = _await_request(collector, trace_id, 2)
        spans = collector.wait_for(
            "the losing call's span",
            lambda got: any(
                s.trace_id == trace_id
                and s.attributes.get("switchyard.attempt.outcome") == "hedged"
                for s in got
            ),
        )
        calls = sorted(
            (s for s in _trace(spans, trace_id) if s.kind == CLIENT),
            key=lambda s: s.attributes["switchyard.attempt.number"],
        )
        primary, hedge = calls
        assert primary.attributes["switchyard.attempt.kind"] == "primary"
        assert primary.attributes["switchyard.attempt.outcome"] == "hedged"
        assert primary.attributes["switchyard.failure.reason"] == "stalled past its deadline"
        assert primary.attributes["gen_ai.usage.output_tokens"] > 0
        assert hedge.attributes["switchyard.attempt.kind"] == "hedge"
        assert hedge.attributes["switchyard.attempt.outcome"] == "won"
        # The answer's record and the losing call's both lead to the request's trace.
        rows = wait_rows(None, server.state_dir, 10)
        mine = {r["status"]: r for r in rows if r["trace_id"] == trace_id}
        assert set(mine) == {"ok", "hedged"}
        assert (mine["ok"]["provider"], mine["hedged"]["provider"]) == ("backup", "primary")
    finally:
        server.stop()


def test_a_stream_continued_elsewhere_is_a_broken_call_and_a_continuation(
    fakes: Fakes, collector: Collector, tmp_path: Path
) -> None:
    """A stream cut after its first chunks and continued on the backup: the primary's call
    ends ``broken``, the backup's is a ``continuation`` that won, both under the request."""
    server = _start(tmp_path, _table(fakes, continueStreams={"default": True}), collector)
    try:
        fakes.openai.push(Fault.cut(3))
        trace_id, _, traceparent = _parent()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        text = ""
        for chunk in client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "one two three four five six"}],
            stream=True,
            extra_headers={"traceparent": traceparent},
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text.startswith("Echo: one two")
        request, calls = _await_request(collector, trace_id, 2)
        broken, continuation = calls
        assert [c.attributes["switchyard.attempt.number"] for c in calls] == [1, 2]
        assert broken.attributes["switchyard.attempt.kind"] == "primary"
        assert broken.attributes["switchyard.attempt.outcome"] == "broken"
        assert broken.attributes["error.type"] == "stream_broken"
        assert continuation.attributes["switchyard.attempt.kind"] == "continuation"
        assert continuation.attributes["switchyard.attempt.outcome"] == "won"
        assert continuation.attributes["switchyard.provider"] == "backup"
        assert request.attributes["switchyard.stream_continued"] is True
        assert {c.parent_span_id for c in calls} == {request.span_id}
    finally:
        server.stop()
