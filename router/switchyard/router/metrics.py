"""Prometheus metrics of the router. Label values are names from the table, never secrets.

Every series that is per provider or per model also carries the ``organization`` (the
namespace the provider belongs to): two organizations may both name a provider
``openai``. Cardinality is bounded by the table, never by clients: organization,
provider and model are names the table holds (a model a client made up is recorded
as ""), ``api`` and ``direction`` are fixed sets, ``status`` is an HTTP status the router
sends, and ``error`` is one of the router's error codes. A request refused before its
key was checked (no organization yet) has ``organization=""``.

With ``--workers`` every worker writes its series to files in one directory
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, which the supervisor
sets), and ``/metrics`` on whichever worker a scrape reaches answers for all of them:
counters and histograms summed, each gauge as its ``multiprocess_mode`` says over the
workers alive.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: Set by ``--workers``'s supervisor: where every worker's series are.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: OpenTelemetry's GenAI conventions: the advised buckets of gen_ai.client.token.usage
#: and gen_ai.client.operation.duration.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_OPERATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 s to 81.92 s
#: The labels of the GenAI series: the conventions' attributes, dots as underscores.
GEN_AI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint of a provider with several (``core.balance``), as it stands."""

    organization: str
    provider: str
    endpoint: str  # host:port
    in_flight: int
    running: float | None  # what the server last said; None: unknown
    waiting: float | None
    kv_cache_usage: float | None
    out: bool
    picks: int
    affinity_hits: int


class EndpointSeries(Collector):
    """Per-endpoint series, read from the balancers when scraped: a call only counts in
    plain integers, and an endpoint that goes (a pod replaced) leaves no series behind.
    Bounded by the table (at most 64 endpoints per provider)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[EndpointRow]] | None = None

    def collect(self) -> Iterator[Metric]:
        # Not "endpoint": Prometheus gives every scraped series that label (the
        # ServiceMonitor's port), and would rename this one.
        labels = ["organization", "provider", "address"]
        in_flight = GaugeMetricFamily(
            "switchyard_endpoint_in_flight",
            "Calls this router has in flight to the endpoint.",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "switchyard_endpoint_running",
            "Requests the endpoint's server said it was running, at the last scrape.",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "switchyard_endpoint_queue",
            "Requests waiting in the endpoint's server's queue, at the last scrape.",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            "switchyard_endpoint_kv_cache_usage",
            "The endpoint's KV-cache use (0-1), where its server says.",
            labels=labels,
        )
        out = GaugeMetricFamily(
            "switchyard_endpoint_out",
            "1 while the endpoint is left out after failing.",
            labels=labels,
        )
        picks = CounterMetricFamily(
            "switchyard_endpoint_picks", "Calls sent to the endpoint.", labels=labels
        )
        hits = CounterMetricFamily(
            "switchyard_endpoint_affinity_hits",
            "Calls sent where their conversation went last.",
            labels=labels,
        )
        for row in self.source() if self.source is not None else ():
            values = [row.organization, row.provider, row.endpoint]
            in_flight.add_metric(values, row.in_flight)
            if row.running is not None:
                running.add_metric(values, row.running)
            if row.waiting is not None:
                waiting.add_metric(values, row.waiting)
            if row.kv_cache_usage is not None:
                kv.add_metric(values, row.kv_cache_usage)
            out.add_metric(values, 1.0 if row.out else 0.0)
            picks.add_metric(values, row.picks)
            hits.add_metric(values, row.affinity_hits)
        yield from (in_flight, running, waiting, kv, out, picks, hits)


class _LoopValue(prometheus_values.MutexValue):
    """A value changed on the event loop's thread only, so without the library's lock."""

    def __init__(self) -> None:
        self._value = 0.0
        self._exemplar = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


class LoopCounter(Counter):
    """The request path's counters: each completion adds to three or four. The library's
    ``inc`` checks twice and takes a lock per call; here only the event loop's thread
    counts, and anything but a plain non-negative amount on a child or an unlabelled
    counter goes to the library's own ``inc`` and its errors."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = _LoopValue()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        parent = self._labelnames and not self._labelvalues
        if amount < 0 or exemplar is not None or parent:
            super().inc(amount, exemplar)
            return
        self._value._value += amount


class LoopHistogram(Histogram):
    """The request path's histograms, like ``LoopCounter``: the library's ``observe``
    also scans its buckets one by one (1.4 us for a latency of 0.3 s; 0.2 us here)."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._sum = _LoopValue()
        self._buckets = [_LoopValue() for _ in self._upper_bounds]

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        # NaN (amount != amount) falls in no bucket in the library's observe; bisection
        # would put it in the first.
        parent = self._labelnames and not self._labelvalues
        if exemplar is not None or amount != amount or parent:
            super().observe(amount, exemplar)
            return
        self._sum._value += amount
        # The first bucket whose upper bound is at least the amount; the last is +Inf.
        self._buckets[bisect_left(self._upper_bounds, amount)]._value += 1


class Metrics:
    """One registry per router instance, so tests and several apps stay apart."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # With --workers the values are files every worker writes (multiprocess mode),
        # which the library's own classes handle.
        loop = not prometheus_values.ValueClass._multiprocess
        counter = LoopCounter if loop else Counter
        histogram = LoopHistogram if loop else Histogram
        self.requests = counter(
            "switchyard_requests",
            "Completion requests by API, provider, model and HTTP status.",
            ["api", "organization", "provider", "model", "status"],
            registry=r,
        )
        self.latency = histogram(
            "switchyard_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["organization", "provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = histogram(
            "switchyard_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["organization", "provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = counter(
            "switchyard_tokens",
            "Tokens by direction (prompt, completion).",
            ["organization", "provider", "model", "direction"],
            registry=r,
        )
        self.cost = counter(
            "switchyard_cost_usd",
            "Spend in US dollars.",
            ["organization", "provider", "model"],
            registry=r,
        )
        self.cache_hits = counter(
            "switchyard_cache_hits",
            "Completions answered from the response cache.",
            ["organization", "provider", "model"],
            registry=r,
        )
        # The GenAI semantic conventions' client metrics, as an OTLP-to-Prometheus bridge
        # names them, beside Switchyard's own: dashboards built for any GenAI client read
        # them. ``gen_ai_request_model`` is the table's model name; ``organization`` as in
        # every other series.
        self.gen_ai_tokens = histogram(
            "gen_ai_client_token_usage",
            "Tokens used per operation (gen_ai.client.token.usage), by gen_ai_token_type "
            "(input, output).",
            ["organization", *GEN_AI_LABELS, "gen_ai_token_type"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.gen_ai_duration = histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of each operation a provider answered (gen_ai.client.operation.duration).",
            ["organization", *GEN_AI_LABELS],
            buckets=_OPERATION_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "switchyard_failovers",
            "Calls that failed and moved on to the next candidate.",
            ["organization", "provider", "error"],
            registry=r,
        )
        self.shared_state_up = Gauge(
            "switchyard_shared_state_up",
            "1 while the shared state (Redis: rate budgets, breaker news) is reachable; "
            "0 while the router serves on its own process's state.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.shared_state_news_refused = Counter(
            "switchyard_shared_state_news_refused",
            "Messages on the news channel (breakers, placements) not believed, by reason: "
            "unsigned (not signed with this deployment's key), stale (older than 30 s), "
            "malformed.",
            ["reason"],
            registry=r,
        )
        self.shared_state_placements_learnt = Counter(
            "switchyard_shared_state_placements_learnt",
            "Conversations another replica placed on one of a provider's endpoints, heard "
            "here: their next turns go to the same endpoint through this replica.",
            ["organization", "provider"],
            registry=r,
        )
        self.shared_state_processes = Gauge(
            "switchyard_shared_state_processes",
            "Router processes (replicas times workers) sharing the state, as last counted; "
            "while Redis is away each keeps this share of every provider's rate limit.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.stalls = Counter(
            "switchyard_stalls",
            "Calls that outlived their route's stall deadline (a few times its recent "
            "p99) without answering; the next candidate was asked.",
            ["organization", "provider"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "switchyard_upstream_errors",
            "Failed provider calls by error class.",
            ["organization", "provider", "error"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "switchyard_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.",
            ["organization", "provider"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.provider_healthy = Gauge(
            "switchyard_provider_health",
            "Last known health per provider: 1 healthy, 0.5 degraded, 0 unhealthy, -1 unknown.",
            ["organization", "provider"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.table_reloads = Counter(
            "switchyard_table_reloads",
            "Routing table loads by result (ok, invalid).",
            ["result"],
            registry=r,
        )
        self.table_info = Gauge(
            "switchyard_table_models",
            "Models in the current routing table, enabled or not.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.connections_open = Gauge(
            "switchyard_open_connections",
            "Client connections the server holds now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.connections_refused = Counter(
            "switchyard_connections_refused",
            "Connections the server answered and closed itself, by reason: too_many_connections, "
            "headers_too_large, header_timeout, body_timeout, malformed.",
            ["reason"],
            registry=r,
        )
        self.in_flight_refused = Counter(
            "switchyard_in_flight_refused",
            "Completion requests refused because their API key had too many in flight.",
            ["organization"],
            registry=r,
        )
        self.hedged_calls = Counter(
            "switchyard_hedged_calls",
            "Calls that did not answer their request but were made, and may be billed: a "
            "hedge that lost its race, or a stalled call given up, by outcome (hedged: it "
            "answered and its usage is the provider's; cancelled: given up first, its usage "
            "estimated). Each is a usage record of its own.",
            ["organization", "provider", "outcome"],
            registry=r,
        )
        self.budget_used = Gauge(
            "switchyard_budget_used_ratio",
            "Spend over the limit of each budget in the table, per period (day, month): "
            "the last read of the database plus what this process spent and holds since. "
            'api_key is "" for an organization\'s own budget.',
            ["organization", "api_key", "period"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.hedges_refused = Counter(
            "switchyard_hedges_refused",
            "Stalled calls not hedged because the request's budgets could not cover a second call.",
            ["organization"],
            registry=r,
        )
        self.turns_not_kept = Counter(
            "switchyard_conversation_turns_not_kept",
            "Answers served but not kept for their conversation (store: true, message "
            "threads) because the store could not take them, by reason: unavailable, refused.",
            ["reason"],
            registry=r,
        )
        self.internal_errors = Counter(
            "switchyard_internal_errors",
            "Requests the router failed on its own (500), whatever the endpoint.",
            registry=r,
        )
        #: Read when scraped, and never merged across ``--workers``: each worker's own.
        self.endpoints = EndpointSeries()
        self.live = CollectorRegistry(auto_describe=False)
        self.live.register(self.endpoints)


def exposition(metrics: Metrics) -> bytes:
    """The router's series in Prometheus' text format; with ``--workers``, every
    worker's series (this one's included) merged instead, then this worker's live ones."""
    path = os.environ.get(MULTIPROC_DIR)
    if not path:
        return generate_latest(metrics.registry) + generate_latest(metrics.live)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path)  # type: ignore[no-untyped-call]
    return generate_latest(merged) + generate_latest(metrics.live)
