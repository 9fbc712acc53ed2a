"""Switchyard's CRDs (crds/) against a real API server: schemas, CEL rules, defaults, columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.controlplane import ControlPlane
from tests.kube.fixtures import KUBE_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(KUBE_TEST_TIMEOUT)

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
CRD_NAMES = [
    "llmproviders.switchyard.dev",
    "llmmodels.switchyard.dev",
    "prompttemplates.switchyard.dev",
]
API_VERSION = "switchyard.dev/v1alpha1"

OPENAI: dict[str, Any] = {"providerType": "openai", "apiKeySecretRef": {"name": "openai-key"}}
MODEL: dict[str, Any] = {
    "providerRef": {"name": "openai"},
    "modelName": "gpt-4o-mini",
    "contextWindow": 128000,
    "maxOutputTokens": 16384,
}
TEMPLATE: dict[str, Any] = {"template": "Summarise {text}", "variables": ["text"]}


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def provider(name: str = "p", **spec: Any) -> dict[str, Any]:
    return obj("LLMProvider", name, spec)


def model(name: str = "m", **spec: Any) -> dict[str, Any]:
    return obj("LLMModel", name, {**MODEL, **spec})


def template(name: str = "t", **spec: Any) -> dict[str, Any]:
    return obj("PromptTemplate", name, {**TEMPLATE, **spec})


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The control plane with Switchyard's CRDs applied and Established."""
    control_plane.kubectl("apply", "-f", str(CRD_DIR))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        *(f"crd/{name}" for name in CRD_NAMES),
        "--timeout=30s",
    )
    yield control_plane


def apply(cp: ControlPlane, namespace: str, manifest: dict[str, Any], check: bool = True) -> str:
    """kubectl apply one object; return what kubectl printed (stderr on failure)."""
    proc = cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check)
    return proc.stdout if proc.returncode == 0 else proc.stderr


def patch(
    cp: ControlPlane, namespace: str, resource: str, body: dict[str, Any], *, status: bool = False
) -> str:
    """kubectl patch --type=merge (of the status subresource if asked); stderr on failure."""
    args = ["patch", resource, "-n", namespace, "--type=merge", "-p", json.dumps(body)]
    proc = cp.kubectl(*args, *(["--subresource=status"] if status else []), check=False)
    return proc.stdout if proc.returncode == 0 else proc.stderr


def get(cp: ControlPlane, namespace: str, resource: str) -> dict[str, Any]:
    out = cp.kubectl("get", resource, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_every_string_and_list_is_bounded() -> None:
    """Unbounded strings and lists make CEL cost estimates explode; keep every one capped."""
    unbounded: list[str] = []

    def walk(schema: dict[str, Any], path: str) -> None:
        kind = schema.get("type")
        capped = {"maxLength", "enum"} & schema.keys() or schema.get("format") == "date-time"
        if kind == "string" and not capped:
            unbounded.append(path)
        if kind == "array":
            if "maxItems" not in schema or "x-kubernetes-list-type" not in schema:
                unbounded.append(path)
            walk(schema["items"], f"{path}[]")
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}")

    for crd_file in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        for version in crd["spec"]["versions"]:
            walk(version["schema"]["openAPIV3Schema"], f"{crd_file.name}:")
    assert unbounded == []


def test_valid_objects_are_accepted_and_defaulted(cluster: ControlPlane, namespace: str) -> None:
    apply(cluster, namespace, provider("openai", **OPENAI))
    apply(cluster, namespace, provider("vllm", providerType="vllm", baseUrl="http://vllm:8000/v1"))
    apply(
        cluster,
        namespace,
        provider(
            "azure",
            providerType="azure_openai",
            baseUrl="https://example.openai.azure.com",
            apiKeySecretRef={"name": "azure-key", "key": "key1"},
            apiVersion="2024-10-21",
            priority=0,
            isDefault=True,
            rateLimits={"requestsPerMinute": 600, "tokensPerMinute": 1000000},
            timeouts={"connectMs": 5000, "firstTokenMs": 30000, "totalMs": 300000},
            maxConnections=64,
            healthCheck={"intervalSeconds": 60},
        ),
    )
    apply(cluster, namespace, model("gpt-4o-mini", bestFor=["chat", "code"]))
    apply(
        cluster,
        namespace,
        template(
            "summarise",
            taskType="summarise",
            modelOverrides=[{"model": "gpt-4o-mini", "template": "TL;DR {text}"}],
        ),
    )

    spec = get(cluster, namespace, "llmprovider/openai")["spec"]
    assert spec["priority"] == 100
    assert spec["healthCheck"] == {"enabled": True, "intervalSeconds": 30}
    assert (spec["isEnabled"], spec["isDefault"]) == (True, False)
    assert spec["apiKeySecretRef"] == {"name": "openai-key", "key": "apiKey"}
    azure = get(cluster, namespace, "llmprovider/azure")["spec"]
    assert (azure["priority"], azure["apiKeySecretRef"]["key"]) == (0, "key1")
    assert azure["healthCheck"] == {"enabled": True, "intervalSeconds": 60}

    spec = get(cluster, namespace, "llmmodel/gpt-4o-mini")["spec"]
    assert (spec["inputPricePer1MTokens"], spec["outputPricePer1MTokens"]) == ("0", "0")
    assert (spec["isEnabled"], spec["supportsStreaming"]) == (True, True)
    assert spec["supportsFunctionCalling"] is False

    spec = get(cluster, namespace, "prompttemplate/summarise")["spec"]
    assert spec["modelOverrides"] == [{"model": "gpt-4o-mini", "template": "TL;DR {text}"}]


REJECTED = [
    pytest.param(
        provider(providerType="vllm"),
        "spec.baseUrl: Required value: "
        "baseUrl is required when providerType is vllm, ollama or azure_openai",
        id="vllm-without-baseUrl",
    ),
    pytest.param(
        provider(providerType="openai"),
        "spec.apiKeySecretRef: Required value: "
        "apiKeySecretRef is required when providerType is openai, azure_openai or anthropic",
        id="openai-without-apiKeySecretRef",
    ),
    pytest.param(
        provider(providerType="llama", baseUrl="http://llama:8000"),
        'spec.providerType: Unsupported value: "llama": supported values: '
        '"anthropic", "openai", "azure_openai", "vllm", "ollama"',
        id="unknown-providerType",
    ),
    pytest.param(
        provider(providerType="vllm", baseUrl="http://169.254.169.254/latest/?x="),
        'spec.baseUrl: Invalid value: "http://169.254.169.254/latest/?x=": '
        "spec.baseUrl in body should match '^https?://[^\\s?#@]+$'",
        id="baseUrl-with-a-query",
    ),
    pytest.param(
        provider(providerType="vllm", baseUrl="http://user:pass@llama:8000/v1"),
        "spec.baseUrl in body should match",
        id="baseUrl-with-credentials",
    ),
    pytest.param(
        provider(providerType="vllm", baseUrl="http://169.254.169.254/latest/meta-data"),
        "spec.baseUrl: Forbidden: baseUrl may not name a link-local or cloud metadata address",
        id="baseUrl-metadata",
    ),
    pytest.param(
        provider(providerType="ollama", baseUrl="http://[fe80::1]:11434"),
        "spec.baseUrl: Forbidden: baseUrl may not name a link-local or cloud metadata address",
        id="baseUrl-link-local-v6",
    ),
    pytest.param(
        provider(
            providerType="openai",
            baseUrl="http://metadata.google.internal/computeMetadata/v1",
            apiKeySecretRef={"name": "k"},
        ),
        "spec.baseUrl: Forbidden: baseUrl may not name a link-local or cloud metadata address",
        id="baseUrl-metadata-name",
    ),
    pytest.param(
        provider(providerType="vllm", baseUrl="HTTP://100.100.100.200:80/latest"),
        "spec.baseUrl: Forbidden: baseUrl may not name a link-local or cloud metadata address",
        id="baseUrl-alibaba-metadata",
    ),
    pytest.param(
        provider(**OPENAI, priority=-1),
        "spec.priority: Invalid value: -1: spec.priority in body should be greater than"
        " or equal to 0",
        id="negative-priority",
    ),
    pytest.param(
        model(inputPricePer1MTokens=0.15),
        'spec.inputPricePer1MTokens: Invalid value: "number": '
        'spec.inputPricePer1MTokens in body must be of type string: "number"',
        id="price-as-number",
    ),
    pytest.param(
        model(inputPricePer1MTokens="cheap"),
        'spec.inputPricePer1MTokens: Invalid value: "cheap": '
        "spec.inputPricePer1MTokens in body should match '^[0-9]+(\\.[0-9]+)?$'",
        id="price-not-decimal",
    ),
    pytest.param(
        model(contextWindow=1000, maxOutputTokens=2000),
        "spec.maxOutputTokens: Invalid value: maxOutputTokens must not exceed contextWindow",
        id="maxOutputTokens-over-contextWindow",
    ),
    pytest.param(
        model(bestFor=["chat", "code", "chat"]),
        "spec.bestFor: Invalid value: bestFor entries must be unique",
        id="duplicate-bestFor",
    ),
    pytest.param(
        obj("LLMModel", "m", {k: v for k, v in MODEL.items() if k != "providerRef"}),
        "spec.providerRef: Required value",
        id="model-without-providerRef",
    ),
    pytest.param(
        template(variables=["text", "1st"]),
        'spec.variables[1]: Invalid value: "1st": '
        "spec.variables[1] in body should match '^[A-Za-z_][A-Za-z0-9_]*$'",
        id="invalid-variable-name",
    ),
    pytest.param(
        template(variables=["text", "text"]),
        "spec.variables: Invalid value: variables entries must be unique",
        id="duplicate-variables",
    ),
    pytest.param(
        template(modelOverrides=[{"model": "a", "template": "x"}, {"model": "a", "template": "y"}]),
        'spec.modelOverrides[1]: Duplicate value: {"model":"a"}',
        id="duplicate-modelOverride",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), REJECTED)
def test_bad_objects_are_rejected_with_a_message_naming_the_problem(
    cluster: ControlPlane, namespace: str, manifest: dict[str, Any], message: str
) -> None:
    err = apply(cluster, namespace, manifest, check=False)
    assert message in err
    kind = manifest["kind"].lower()
    assert cluster.kubectl("get", kind, "-n", namespace, "-o", "name").stdout == ""


@pytest.mark.parametrize(
    "url",
    [
        "http://vllm.team-a.svc:8000/v1",
        "http://10.0.0.7:11434",
        "http://[fd12::7]:8000/v1",
        "https://metadata-proxy.example.com/v1",
        "http://169.254.example.com/v1",
    ],
)
def test_a_base_url_only_the_operator_may_judge_is_accepted(
    cluster: ControlPlane, namespace: str, url: str
) -> None:
    """The CRD refuses what names the metadata service outright; private, cluster and
    public addresses depend on the provider type and the platform's allowance, which
    the operator and the routers apply."""
    apply(cluster, namespace, provider("p", providerType="vllm", baseUrl=url))
    assert get(cluster, namespace, "llmprovider/p")["spec"]["baseUrl"] == url


def test_providerType_cannot_be_changed(cluster: ControlPlane, namespace: str) -> None:
    apply(cluster, namespace, provider("p", **OPENAI))
    err = apply(cluster, namespace, provider("p", **{**OPENAI, "providerType": "anthropic"}), False)
    assert (
        'spec.providerType: Invalid value: "anthropic": '
        "providerType cannot be changed; create a new LLMProvider"
    ) in err
    assert get(cluster, namespace, "llmprovider/p")["spec"]["providerType"] == "openai"
    # Other fields stay editable.
    apply(cluster, namespace, provider("p", **OPENAI, priority=5))
    assert get(cluster, namespace, "llmprovider/p")["spec"]["priority"] == 5


def test_switchyard_category_lists_all_three_kinds(cluster: ControlPlane, namespace: str) -> None:
    apply(cluster, namespace, provider("openai", **OPENAI))
    apply(cluster, namespace, model("gpt-4o-mini"))
    apply(cluster, namespace, template("summarise"))
    out = cluster.kubectl("get", "switchyard", "-n", namespace, "-o", "name").stdout
    assert sorted(out.split()) == [
        "llmmodel.switchyard.dev/gpt-4o-mini",
        "llmprovider.switchyard.dev/openai",
        "prompttemplate.switchyard.dev/summarise",
    ]


def ready_condition(generation: int = 1) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "HealthCheckPassed",
        "message": "the provider answered in 120 ms",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


def columns(cp: ControlPlane, namespace: str, *args: str) -> list[list[str]]:
    out = cp.kubectl("get", *args, "-n", namespace).stdout
    return [line.split() for line in out.splitlines()]


def test_printer_columns(cluster: ControlPlane, namespace: str) -> None:
    apply(cluster, namespace, provider("openai", **OPENAI, priority=7))
    apply(cluster, namespace, model("gpt-4o-mini"))
    apply(cluster, namespace, template("summarise", taskType="summarise"))
    status = {"health": "healthy", "conditions": [ready_condition()]}
    assert "patched" in patch(cluster, namespace, "llmp/openai", {"status": status}, status=True)

    header, row = columns(cluster, namespace, "llmp")
    assert header == ["NAME", "TYPE", "READY", "HEALTH", "AGE"]
    assert row[:4] == ["openai", "openai", "True", "healthy"]
    header, row = columns(cluster, namespace, "llmp", "-o", "wide")
    assert header == ["NAME", "TYPE", "READY", "HEALTH", "PRIORITY", "AGE"]
    assert row[4] == "7"

    header, row = columns(cluster, namespace, "llmm")
    assert header == ["NAME", "PROVIDER", "MODEL", "CONTEXT", "READY", "SERVING", "AGE"]
    assert row[:4] == ["gpt-4o-mini", "openai", "gpt-4o-mini", "128000"]
    header, row = columns(cluster, namespace, "llmt")
    assert header == ["NAME", "TASK", "READY", "AGE"]
    assert row[:2] == ["summarise", "summarise"]


def test_status_subresource_and_generation(cluster: ControlPlane, namespace: str) -> None:
    apply(cluster, namespace, provider("openai", **OPENAI))

    status = {
        "observedGeneration": 1,
        "conditions": [ready_condition()],
        "health": "healthy",
        "consecutiveFailures": 0,
        "lastCheckTime": "2025-01-01T00:00:00Z",
        "latencyMs": 120,
        "message": "ok",
        "discoveredModels": ["gpt-4o", "gpt-4o-mini"],
    }
    assert "patched" in patch(cluster, namespace, "llmp/openai", {"status": status}, status=True)
    got = get(cluster, namespace, "llmprovider/openai")
    assert got["status"] == status
    assert got["metadata"]["generation"] == 1

    # Through the main resource a status change is dropped, and a spec change
    # bumps the generation while leaving the status alone.
    patch(cluster, namespace, "llmp/openai", {"status": {"health": "unhealthy"}})
    assert get(cluster, namespace, "llmprovider/openai")["status"]["health"] == "healthy"
    assert "patched" in patch(cluster, namespace, "llmp/openai", {"spec": {"priority": 5}})
    got = get(cluster, namespace, "llmprovider/openai")
    assert (got["metadata"]["generation"], got["status"]) == (2, status)

    # The status schema is enforced too.
    bad = patch(cluster, namespace, "llmp/openai", {"status": {"health": "fine"}}, status=True)
    assert 'status.health: Unsupported value: "fine"' in bad
