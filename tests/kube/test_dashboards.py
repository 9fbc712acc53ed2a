"""The chart's Grafana dashboards and alerting rules read series a router exports.

The chart is rendered by the real helm with both enabled; every panel's and every
alert's expression is parsed as PromQL, and each metric it selects, with every label
it groups, matches or joins on, is checked against the exposition of a real router
that has served some traffic (answers, a failover, a cache hit, a stream, a budget).
A metric renamed in the router, or a label dropped, fails here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Factory
from tests.fakes import FakeOpenAI, FakeVLLM, Fault
from tests.fakes.model_server import FakeModelServer
from tests.kube.controlplane import ControlPlane
from tests.kube.fixtures import KUBE_TEST_TIMEOUT
from tests.kube.test_chart import CHART, helm
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

pytestmark = pytest.mark.timeout(KUBE_TEST_TIMEOUT)

#: What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$organization": ".*",
}
#: Labels Prometheus adds to every series it scrapes (the ServiceMonitor's target).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
#: The sample names each kind of family exposes, by suffix.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
OPENAI_KEY = "sk-dashboards-test"


# -- what the chart asks for ---------------------------------------------------------


def rendered(cp: ControlPlane) -> list[dict[str, Any]]:
    out = helm(
        cp, "template", "sy", str(CHART),
        "--set", "grafana.dashboards.enabled=true",
        "--set", "prometheusRule.enabled=true",
        "--set", "redis.enabled=true",  # the shared state's alerts too
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def dashboards(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: json.loads(text)
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"
        for name, text in d["data"].items()
    }


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row's


def substituted(expr: str) -> str:
    # The longest first: $__rate_interval before $__range, and so on.
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable left unsubstituted in {expr!r}"
    return expr


# -- what a query selects --------------------------------------------------------------

#: (metric name, label names used on it) for every series an expression selects.
Uses = list[tuple[str, set[str]]]


def uses(node: Any, labels: frozenset[str] = frozenset()) -> Uses:
    """Each vector selector under ``node``, with the labels its own matchers name and
    those the aggregations (``by``) and vector matches (``on``) above it group by."""
    if isinstance(node, promql_parser.VectorSelector):
        matchers = node.matchers.matchers + [m for ms in node.matchers.or_matchers for m in ms]
        names = [m.value for m in matchers if m.name == "__name__"]
        if node.name:
            names.append(node.name)
        assert len(names) == 1, f"{node} selects no one metric by name"
        return [(names[0], set(labels) | {m.name for m in matchers if m.name != "__name__"})]
    if isinstance(node, promql_parser.MatrixSelector):
        return uses(node.vector_selector, labels)
    if isinstance(node, promql_parser.AggregateExpr):
        grouped = labels
        if node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By:
            grouped = labels | set(node.modifier.labels)
        found = uses(node.expr, grouped)
        return found + (uses(node.param, labels) if node.param is not None else [])
    if isinstance(node, promql_parser.BinaryExpr):
        joined = labels
        modifier = node.modifier
        if modifier is not None:
            matching = modifier.matching
            if matching is not None and matching.type == promql_parser.LabelModifierType.Include:
                joined = labels | set(matching.labels)
            joined = joined | set(modifier.group_labels or [])
        return uses(node.lhs, joined) + uses(node.rhs, joined)
    if isinstance(node, promql_parser.Call):
        return [u for arg in node.args for u in uses(arg, labels)]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return uses(node.expr, labels)
    if isinstance(node, promql_parser.SubqueryExpr):
        return uses(node.expr, labels)
    assert isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral), node
    return []


def test_uses_finds_names_and_labels() -> None:
    """The walk itself: selectors under functions, aggregations, joins and ``__name__``."""
    expr = promql_parser.parse(
        'histogram_quantile(0.9, sum by (le, a) (rate(x_bucket{b="1"}[5m])))'
        ' / on (c) group_left (d) {__name__="y_total"} > 3 < 4'
    )
    assert sorted(uses(expr), key=lambda u: u[0]) == [
        ("x_bucket", {"le", "a", "b", "c", "d"}),
        ("y_total", {"c", "d"}),
    ]


# -- what a router exports -------------------------------------------------------------


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeVLLM]]:
    os.environ["SY_TEST_DASHBOARDS_KEY"] = OPENAI_KEY
    # The backup publishes its load as vLLM does (/metrics), for the endpoint series.
    primary, backup = FakeOpenAI(api_key=OPENAI_KEY), FakeModelServer()
    primary.start()
    backup.start()
    yield primary, backup
    primary.stop()
    backup.stop()


def exported(gw: RouterServer) -> dict[str, set[str]]:
    """Every sample name the router's /metrics may hold, with the label names seen on it
    (plus, for a family no traffic reached yet, the labels the router declares for it)."""
    text = httpx.get(f"{gw.admin}/metrics", timeout=10).text
    declared = {
        name: set(getattr(c, "_labelnames", ()))
        for name, c in gw.services.metrics.registry._names_to_collectors.items()
    }
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES[family.type]:
            name = family.name + suffix
            series[name] = set(declared.get(name, ()))
            if family.type == "histogram" and suffix == "_bucket":
                series[name].add("le")
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def serve_some_traffic(gw: RouterServer, primary: FakeOpenAI) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}

    def ask(content: str, stream: bool = False, **extra: Any) -> None:
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=auth,
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": content}],
                "stream": stream,
                **extra,
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text

    primary.push(Fault.error(500))
    ask("the primary fails, the backup answers")
    ask("answered", temperature=0)
    ask("answered", temperature=0)  # from the cache
    ask("streamed", stream=True)
    refused = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, json={}, timeout=10)
    assert refused.status_code == 400


def test_every_series_the_dashboards_and_alerts_use_is_exported(
    control_plane: ControlPlane,
    router: Factory,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    docs = rendered(control_plane)
    boards = dashboards(docs)
    assert sorted(boards) == ["switchyard-overview.json", "switchyard-resilience.json"]
    queries: list[tuple[str, str]] = []  # (where, PromQL)
    for file, board in boards.items():
        assert board["schemaVersion"] >= 39
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        organization = variables["organization"]
        assert organization["query"]["query"] == (
            "label_values(switchyard_requests_total, organization)"
        )
        for p in panels(board):
            for t in p.get("targets", []):
                queries.append((f"{file}: {p['title']}", substituted(t["expr"])))
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "SwitchyardBreakerOpen",
        "SwitchyardProviderErrors",
        "SwitchyardBudgetNearlySpent",
        "SwitchyardBudgetSpent",
        "SwitchyardSharedStateDown",
        "SwitchyardUsageSpoolGrowing",
    }
    for a in alerts:
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        queries.append((f"alert {a['alert']}", a["expr"]))
    assert len(queries) > 40

    primary, backup = fakes
    doc = table(
        [
            provider(
                "primary", "openai", primary.url, key_env="SY_TEST_DASHBOARDS_KEY", priority=1
            ),
            # Its one replica listed as an endpoint: the per-endpoint series have samples.
            provider(
                "backup", "vllm", backup.url, priority=2, endpoints=[f"127.0.0.1:{backup.port}"]
            ),
        ],
        [
            model("chat", "primary", "gpt-4o-mini"),
            model("chat", "backup", "meta-llama/Llama-3.1-8B-Instruct"),
        ],
    )
    doc["budgets"] = [{"organization": "default", "dailyUsd": "100"}]
    gw = router(doc)
    serve_some_traffic(gw, primary)
    deadline = time.monotonic() + 5  # the backup's load, scraped once it was called
    while "switchyard_endpoint_queue{" not in httpx.get(f"{gw.admin}/metrics").text:
        assert time.monotonic() < deadline, "the backup's load was never scraped"
        time.sleep(0.05)
    series = exported(gw)

    used: Uses = [("switchyard_requests_total", {"organization"})]  # the variable's query
    for where, expr in queries:
        try:
            parsed = promql_parser.parse(expr)
        except ValueError as e:
            raise AssertionError(f"{where}: {expr!r} is not PromQL: {e}") from e
        used += [(name, labels) for name, labels in uses(parsed)]
        for name, labels in uses(parsed):
            assert name in series, f"{where}: {name} is not a series the router exports"
            missing = labels - series[name] - TARGET_LABELS
            assert not missing, f"{where}: {name} has no label {sorted(missing)}"
    # What the dashboards promise to cover.
    names = {name for name, _ in used}
    assert {
        "switchyard_cost_usd_total",
        "switchyard_requests_total",
        "switchyard_request_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "switchyard_breaker_state",
        "switchyard_stalls_total",
        "switchyard_failovers_total",
        "switchyard_hedged_calls_total",
        "switchyard_budget_used_ratio",
        "switchyard_shared_state_up",
        "switchyard_shared_state_news_refused_total",
        "switchyard_usage_spool_bytes",
    } <= names


def test_the_dashboards_are_files_of_the_chart() -> None:
    """What the ConfigMaps carry is files/dashboards/*.json, each valid JSON with a uid."""
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    uids = [json.loads(Path(f).read_text())["uid"] for f in files]
    assert len(files) == 2 and len(set(uids)) == len(uids)
