"""Compiling cluster objects into the routing table, without a cluster."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from switchyard.operator.compiler import compile_state, validate
from switchyard.operator.state import ClusterState
from switchyard.router.table import bundle


def body(kind: str, ns: str, name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"namespace": ns, "name": name, "generation": 1, "uid": f"uid-{name}", **extra},
        "spec": spec,
    }


def secret(
    ns: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def cluster() -> ClusterState:
    s = ClusterState()
    s.record(
        "llmproviders",
        "ADDED",
        body(
            "LLMProvider",
            "team-a",
            "openai",
            {
                "providerType": "openai",
                "baseUrl": "https://api.openai.com/v1",
                "priority": 10,
                "apiKeySecretRef": {"name": "openai-key", "key": "apiKey"},
            },
        ),
    )
    s.record(
        "llmproviders",
        "ADDED",
        body(
            "LLMProvider",
            "team-a",
            "local",
            {"providerType": "vllm", "baseUrl": "http://vllm:8000/v1"},
        ),
    )
    s.record_secret("ADDED", secret("team-a", "openai-key", {"apiKey": "sk-123"}), "x")
    s.record(
        "llmmodels",
        "ADDED",
        body(
            "LLMModel",
            "team-a",
            "gpt",
            {
                "providerRef": {"name": "openai"},
                "modelName": "gpt-4o-mini",
                "contextWindow": 128000,
                "maxOutputTokens": 16384,
                "inputPricePer1MTokens": "0.15",
                "bestFor": ["code"],
            },
        ),
    )
    s.record(
        "llmmodels",
        "ADDED",
        body(
            "LLMModel",
            "team-a",
            "orphan",
            {
                "providerRef": {"name": "nope"},
                "modelName": "x",
                "contextWindow": 10,
                "maxOutputTokens": 5,
            },
        ),
    )
    s.record(
        "prompttemplates",
        "ADDED",
        body(
            "PromptTemplate",
            "team-a",
            "review",
            {
                "template": "Review {{code}}",
                "variables": ["code"],
                "modelOverrides": [
                    {"model": "gpt", "template": "<c>{{code}}</c>"},
                    {"model": "gone", "template": "{{code}}"},
                ],
            },
        ),
    )
    s.record(
        "prompttemplates",
        "ADDED",
        body("PromptTemplate", "team-a", "bad", {"template": "Hi {{name}}", "variables": ["nam"]}),
    )
    s.record_secret(
        "ADDED",
        secret(
            "team-a",
            "ci",
            {"sha256": "ab" * 32, "scopes": "completion, usage:read"},
            {"switchyard.dev/api-key": "true"},
        ),
        "switchyard.dev/api-key",
    )
    s.record_secret(
        "ADDED",
        secret("team-b", "ci", {"sha256": "cd" * 32}, {"switchyard.dev/api-key": "true"}),
        "switchyard.dev/api-key",
    )
    s.record_secret(
        "ADDED",
        secret("team-b", "broken", {"sha256": "zz"}, {"switchyard.dev/api-key": "true"}),
        "switchyard.dev/api-key",
    )
    return s


def test_a_cluster_compiles_to_a_valid_table_leaving_out_what_would_break_it() -> None:
    c = compile_state(cluster())
    assert validate(c.document) is None
    doc = c.document
    assert [(p["organization"], p["name"]) for p in doc["providers"]] == [
        ("team-a", "local"),
        ("team-a", "openai"),
    ]
    openai = doc["providers"][1]
    assert openai["apiKey"] == {"secretKey": "team-a.openai"}
    assert "sk-123" not in orjson.dumps(doc).decode()  # keys never enter the table
    assert c.provider_keys == {"team-a.openai": "sk-123"}
    assert [m["name"] for m in doc["models"]] == ["gpt"]
    assert c.verdicts[("llmmodels", ("team-a", "orphan"))].reason == "ProviderNotFound"
    assert [t["name"] for t in doc["templates"]] == ["review"]
    assert doc["templates"][0]["modelOverrides"] == [
        {"model": "gpt", "template": "<c>{{code}}</c>"}
    ]
    bad = c.verdicts[("prompttemplates", ("team-a", "bad"))]
    assert bad.reason == "VariablesMismatch" and "name" in bad.message and "nam" in bad.message
    assert [(k["organization"], k["name"], k["scopes"]) for k in doc["apiKeys"]] == [
        ("team-a", "ci", ["completion", "usage:read"]),
        ("team-b", "ci", ["completion"]),
    ]
    assert c.api_key_problems == {("team-b", "broken"): "data.sha256 must be 64 hex digits"}


def test_compiling_is_deterministic_and_reacts_to_deletion() -> None:
    s = cluster()
    first = compile_state(s).document
    assert compile_state(cluster()).document == first
    s.record("llmproviders", "DELETED", body("LLMProvider", "team-a", "openai", {}))
    after = compile_state(s)
    assert [m["name"] for m in after.document["models"]] == []
    assert after.verdicts[("llmmodels", ("team-a", "gpt"))].reason == "ProviderNotFound"
    assert validate(after.document) is None


def test_a_missing_secret_is_a_reason_not_a_crash() -> None:
    s = ClusterState()
    s.record(
        "llmproviders",
        "ADDED",
        body(
            "LLMProvider",
            "ns",
            "p",
            {"providerType": "anthropic", "apiKeySecretRef": {"name": "absent"}},
        ),
    )
    c = compile_state(s)
    assert c.verdicts[("llmproviders", ("ns", "p"))].reason == "ApiKeyMissing"
    assert validate(c.document) is None


def test_big_tables_are_packed_into_checksummed_parts() -> None:
    doc = {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": [],
        "models": [],
        "templates": [],
        "apiKeys": [],
        "padding": [f"{i:08d}-" * 40 + str(i * 7919 % 104729) for i in range(20000)],
    }
    import os

    doc["noise"] = [os.urandom(64).hex() for _ in range(30000)]  # does not compress
    packed = bundle.pack(doc, lambda i: f"routing-part-{i}")
    assert len(packed.parts) >= 2
    assert all(
        len(b) <= bundle.PART_SIZE for files in packed.parts.values() for b in files.values()
    )
    blobs = {(cm, k): v for cm, files in packed.parts.items() for k, v in files.items()}
    raw = bundle.unpack(
        {"index.json": packed.data["index.json"].encode()}, lambda cm, k: blobs.get((cm, k))
    )
    assert orjson.loads(raw)["noise"] == doc["noise"]
    # A part from a different version does not pass the checksum.
    first = next(iter(blobs))
    # Its last byte changed (flipped: a byte set to a fixed value may already hold it).
    blobs[first] = blobs[first][:-1] + bytes([blobs[first][-1] ^ 1])
    import pytest

    from switchyard.router.errors import ConfigError

    with pytest.raises(ConfigError, match="checksum"):
        bundle.unpack(
            {"index.json": packed.data["index.json"].encode()}, lambda cm, k: blobs.get((cm, k))
        )


def test_overrides_for_absent_models_do_not_break_the_variables_check() -> None:
    from switchyard.operator.compiler import compile_valid

    s = cluster()
    s.record(
        "prompttemplates",
        "ADDED",
        body(
            "PromptTemplate",
            "team-a",
            "early",
            {
                "template": "{{a}}",
                "variables": ["a", "b"],
                "modelOverrides": [{"model": "not-yet", "template": "{{a}} {{b}}"}],
            },
        ),
    )
    compiled, problem = compile_valid(s)
    assert problem is None
    verdict = compiled.verdicts[("prompttemplates", ("team-a", "early"))]
    assert verdict.reason == "VariablesMismatch" and "never used: b" in verdict.message
    assert "bad" not in [t["name"] for t in compiled.document["templates"]]


def test_long_names_get_short_key_names_and_what_the_router_refuses_is_left_out() -> None:
    from switchyard.operator.compiler import compile_valid

    s = ClusterState()
    ns, name = "n" * 63, "p" * 253
    s.record(
        "llmproviders",
        "ADDED",
        body("LLMProvider", ns, name, {"providerType": "openai", "apiKeySecretRef": {"name": "k"}}),
    )
    s.record_secret("ADDED", secret(ns, "k", {"apiKey": "sk-1"}), "x")
    # A provider name the router's pattern refuses (the CRD would not allow it either).
    s.record(
        "llmproviders",
        "ADDED",
        body("LLMProvider", "ns", "Bad_Name", {"providerType": "vllm", "baseUrl": "http://v/v1"}),
    )
    s.record(
        "llmproviders",
        "ADDED",
        body("LLMProvider", "ns", "fine", {"providerType": "vllm", "baseUrl": "http://v/v1"}),
    )
    compiled, problem = compile_valid(s)
    assert problem is None
    assert all(len(k) <= 253 for k in compiled.provider_keys)
    names = [p["name"] for p in compiled.document["providers"]]
    assert "fine" in names and "Bad_Name" not in names and name in names
    assert compiled.verdicts[("llmproviders", ("ns", "Bad_Name"))].reason == "RejectedByRouter"


def test_settings_sections_are_validated_and_compiled() -> None:
    import pytest

    from switchyard.operator.compiler import compile_valid
    from switchyard.router.table.settings import parse_settings

    settings = parse_settings(
        "routing: {maxAttempts: 2}\ncache: {ttlSeconds: 60}\n"
        "budgets:\n  - {organization: team-a, monthlyUsd: '100'}\n"
        "  - {organization: team-a, apiKey: ci, dailyUsd: '5'}\n"
        "  - {organization: team-a, apiKey: not-yet, dailyUsd: '1'}\n"
    )
    assert settings["routing"] == {"maxAttempts": 2}
    s = cluster()
    s.settings = settings
    compiled, problem = compile_valid(s)
    assert problem is None
    doc = compiled.document
    assert doc["routing"] == {"maxAttempts": 2} and doc["cache"] == {"ttlSeconds": 60}
    assert [b.get("apiKey") for b in doc["budgets"]] == [None, "ci"]
    with pytest.raises(ValueError, match=r"cache\.ttlSeconds"):
        parse_settings("cache: {ttlSeconds: -1}")
    with pytest.raises(ValueError, match="unknown sections: providers"):
        parse_settings("providers: []")


def slice_body(
    ns: str, name: str, service: str, ports: list[tuple[str, int]], ready: dict[str, bool | None]
) -> dict[str, Any]:
    endpoints = []
    for ip, ok in ready.items():
        ep: dict[str, Any] = {"addresses": [ip]}
        if ok is not None:
            ep["conditions"] = {"ready": ok}
        endpoints.append(ep)
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def pool_provider(ref: dict[str, Any]) -> dict[str, Any]:
    return body(
        "LLMProvider",
        "team-a",
        "pool",
        {"providerType": "vllm", "baseUrl": "http://pool:80/v1", "serviceRef": ref},
    )


def test_a_service_ref_compiles_to_its_ready_pods() -> None:
    s = ClusterState()
    s.record("llmproviders", "ADDED", pool_provider({"name": "pool", "port": "http"}))
    s.dirty.clear()
    ports = [("http", 8000), ("metrics", 9000)]
    assert s.record_slice(
        "ADDED",
        slice_body("team-a", "pool-x", "pool", ports, {"10.1.0.5": True, "10.1.0.6": None}),
    )
    assert s.dirty.is_set()
    # Terminating or not ready: left out. A named targetPort may differ per slice.
    s.record_slice(
        "ADDED",
        slice_body(
            "team-a", "pool-y", "pool", [("http", 8001)], {"10.1.0.7": False, "10.1.0.8": True}
        ),
    )
    # Another namespace's Service of the same name is not this provider's.
    s.dirty.clear()
    assert not s.record_slice(
        "ADDED", slice_body("team-b", "pool-z", "pool", ports, {"10.2.0.1": True})
    )
    assert not s.dirty.is_set()
    compiled = compile_state(s)
    (entry,) = compiled.document["providers"]
    assert entry["endpoints"] == ["10.1.0.5:8000", "10.1.0.6:8000", "10.1.0.8:8001"]
    assert "serviceRef" not in entry
    assert validate(compiled.document) is None
    assert not compiled.endpoint_problems
    # The slice goes: so do its pods.
    s.record_slice("DELETED", slice_body("team-a", "pool-x", "pool", ports, {}))
    assert compile_state(s).document["providers"][0]["endpoints"] == ["10.1.0.8:8001"]


def test_a_service_ref_without_ready_pods_keeps_the_base_url_and_says_why() -> None:
    s = ClusterState()
    s.record("llmproviders", "ADDED", pool_provider({"name": "pool", "port": "grpc"}))
    compiled = compile_state(s)
    assert "endpoints" not in compiled.document["providers"][0]
    assert compiled.endpoint_problems == {("team-a", "pool"): "Service pool has no ready endpoints"}
    s.record_slice(
        "ADDED", slice_body("team-a", "pool-x", "pool", [("http", 8000)], {"10.1.0.5": True})
    )
    compiled = compile_state(s)
    assert compiled.endpoint_problems == {("team-a", "pool"): "Service pool has no port 'grpc'"}


def test_more_ready_pods_than_the_table_holds_are_cut_and_said() -> None:
    s = ClusterState()
    s.record("llmproviders", "ADDED", pool_provider({"name": "pool"}))
    ready: dict[str, bool | None] = {f"10.1.{i // 250}.{i % 250 + 1}": True for i in range(70)}
    s.record_slice("ADDED", slice_body("team-a", "pool-x", "pool", [("", 8000)], ready))
    compiled = compile_state(s)
    assert len(compiled.document["providers"][0]["endpoints"]) == 64
    assert (
        "70 ready endpoints; the first 64 are used"
        in compiled.endpoint_problems[("team-a", "pool")]
    )
    assert validate(compiled.document) is None
