"""The Helm chart, against a real API server: lint, and every rendering of a matrix of
values accepted by ``kubectl apply --dry-run=server``; values that cannot work refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.kube.controlplane import ControlPlane
from tests.kube.fixtures import KUBE_TEST_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "switchyard"
#: The Prometheus Operator's own ServiceMonitor and PrometheusRule CRDs, from its Go module.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

pytestmark = pytest.mark.timeout(KUBE_TEST_TIMEOUT)

MATRIX: dict[str, list[str]] = {
    "defaults": [],
    "sqlite, one replica": ["postgresql.enabled=false", "router.replicas=1"],
    "own database": [
        "postgresql.enabled=false",
        "database.existingSecret=my-db",
        "router.replicas=3",
    ],
    "autoscaled": ["router.autoscaling.enabled=true", "router.podDisruptionBudget.enabled=false"],
    "replicas sharing a bundled redis": ["router.replicas=3", "redis.enabled=true"],
    "replicas sharing your redis": ["router.replicas=3", "sharedState.existingSecret=my-redis"],
    "in-cluster models": [
        "ollama.enabled=true",
        "vllm.enabled=true",
        "ollama.gpu.enabled=true",
        "vllm.nodeSelector.gpu=nvidia",
    ],
    "air-gapped ollama, no volumes": [
        "ollama.enabled=true",
        "ollama.persistence.enabled=false",
        "ollama.models[0].name=smollm2",
        "ollama.models[0].gguf=/opt/models/smollm2.gguf",
        "postgresql.persistence.enabled=false",
    ],
    "private mirror": [
        "global.imageRegistry=mirror.example:5000",
        "global.imagePullSecrets[0].name=mirror",
        "router.image.tag=1.2.3",
    ],
    "monitored, settings": [
        "metrics.serviceMonitor.enabled=true",
        "grafana.dashboards.enabled=true",
        "grafana.dashboards.annotations.grafana_folder=Switchyard",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=prometheus",
        "redis.enabled=true",
        "settings.routing.maxAttempts=2",
        "settings.cache.ttlSeconds=60",
        "router.persistence.enabled=true",
    ],
    "other names": ["fullnameOverride=llm-gateway", "publish.routingConfigMap=table"],
    "cloud types allowed into the cluster": [
        'settings.routing.providerNetworks.allowCIDRs=["10.96.0.0/12","fd00::/8"]',
    ],
    "no network policies, another admin port": [
        "networkPolicy.enabled=false",
        "router.adminPort=9999",
    ],
    "the README's kind values": [f"-f={ROOT / 'examples' / 'values-kind.yaml'}"],
    # @ns: the test's namespace (kubectl applies one namespace's objects at a time).
    "named organizations": [
        "watchNamespaces={@ns}",
        "router.settingsNamespaces={@ns}",
        "redis.enabled=true",
    ],
}


def helm(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(cp.bin_dir / "helm"), f"--kubeconfig={cp.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, HELM_CACHE_HOME="/tmp/helm-cache", HELM_CONFIG_HOME="/tmp/helm"),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def _sets(values: list[str]) -> list[str]:
    """--set for each value; --set-json for those whose value is JSON; -f=FILE as it is."""
    out: list[str] = []
    for v in values:
        out += [v] if v.startswith("-f=") else ["--set-json" if "=[" in v else "--set", v]
    return out


def test_the_charts_crds_are_the_projects() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == top
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_lint(control_plane: ControlPlane) -> None:
    out = helm(control_plane, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    """Switchyard's CRDs, and the Prometheus Operator's ServiceMonitor and PrometheusRule."""
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    found = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(
            os.environ,
            GOWORK="off",
            GOTOOLCHAIN="local",
            GOFLAGS="-mod=mod",
            GOMODCACHE=str(
                Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
                / "go"
                / "mod"
            ),
        ),
    )
    if found.returncode != 0:
        pytest.skip(f"the ServiceMonitor CRD could not be fetched: {found.stderr[-300:]}")
    crds = Path(json.loads(found.stdout)["Dir"]) / "example/prometheus-operator-crd"
    for kind in ("servicemonitors", "prometheusrules"):
        crd = crds / f"monitoring.coreos.com_{kind}.yaml"
        control_plane.kubectl("apply", "--server-side", "-f", str(crd))
    for name in (
        "llmproviders.switchyard.dev",
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}")


@pytest.mark.parametrize("case", list(MATRIX))
def test_every_rendering_is_accepted_by_the_api_server(
    control_plane: ControlPlane, crds: None, namespace: str, case: str
) -> None:
    rendered = helm(
        control_plane,
        "template",
        "sy",
        str(CHART),
        "--namespace",
        namespace,
        *_sets([v.replace("@ns", namespace) for v in MATRIX[case]]),
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole"} <= set(kinds)
    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered, check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(kinds)


def test_the_rendered_router_is_what_was_asked(control_plane: ControlPlane) -> None:
    docs = list(
        yaml.safe_load_all(
            helm(
                control_plane,
                "template",
                "sy",
                str(CHART),
                "--namespace",
                "gw",
                *_sets(
                    [
                        "global.imageRegistry=mirror.example:5000",
                        "router.replicas=3",
                        "router.limits.headerTimeoutSeconds=3",
                        "router.usageRecordDays=90",
                    ]
                ),
            ).stdout
        )
    )
    router = next(
        d for d in docs if d and d["kind"] == "Deployment" and "router" in d["metadata"]["name"]
    )
    spec = router["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert router["spec"]["replicas"] == 3
    assert container["image"] == "mirror.example:5000/switchyard-dev/switchyard-router:0.1.0"
    assert "--routing-configmap=gw/switchyard-routing" in container["args"]
    assert {
        "--max-connections=4096",
        "--max-header-bytes=16384",
        "--header-timeout=3",
        "--body-timeout=60",
        "--usage-record-days=90",
    } <= set(container["args"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080,
        "admin": 9090,
    }
    assert "--admin-port=9090" in container["args"]
    services = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "Service"}
    # Clients reach the API only; the admin port is the metrics Service's.
    assert [p["targetPort"] for p in services["sy-switchyard-router"]["spec"]["ports"]] == ["http"]
    assert [p["targetPort"] for p in services["sy-switchyard-router-metrics"]["spec"]["ports"]] == [
        "admin"
    ]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "sy-switchyard-database",
        "key": "url",
    }
    operator = next(
        d for d in docs if d and d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]
    )
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"]["type"] == "Recreate"
    roles = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "Role"}
    secrets_rule = next(
        r for r in roles["sy-switchyard-router"]["rules"] if "secrets" in r["resources"]
    )
    assert secrets_rule["resourceNames"] == ["switchyard-provider-keys"]
    assert not any(e["name"] == "SWITCHYARD_REDIS_URL" for e in container["env"])


def test_replicas_share_state_through_the_bundled_redis(control_plane: ControlPlane) -> None:
    rendered = helm(
        control_plane, "template", "sy", str(CHART), *_sets(["redis.enabled=true"])
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    router = next(
        d for d in docs if d["kind"] == "Deployment" and "router" in d["metadata"]["name"]
    )
    env = {e["name"]: e for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    # The URL, password included, comes from the Secret: the pod's spec names it only.
    assert env["SWITCHYARD_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "sy-switchyard-redis",
        "key": "url",
    }
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("redis")
    )
    password = secret["stringData"]["password"]
    assert len(password) == 32
    assert secret["stringData"]["url"] == f"redis://:{password}@sy-switchyard-redis:6379/0"
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("redis")
    )
    assert service["metadata"]["name"] == "sy-switchyard-redis"
    assert service["spec"]["ports"][0]["port"] == 6379
    redis = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("redis")
    )
    pod = redis["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    # The password reaches redis-server through the environment and its configuration on
    # standard input: not in the spec, not in its arguments; no --protected-mode no.
    container = pod["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    [script] = container["args"]
    assert script.startswith("exec redis-server - ") and "requirepass $REDIS_PASSWORD\n" in script
    assert "--requirepass" not in script and "protected-mode" not in script
    assert password not in json.dumps(redis)
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    assert {e["name"] for e in container["env"]} == {"REDIS_PASSWORD", "REDISCLI_AUTH"}
    # Only the routers may reach Redis and PostgreSQL.
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"sy-switchyard-redis", "sy-switchyard-postgresql"}
    for name, port in (("sy-switchyard-redis", 6379), ("sy-switchyard-postgresql", 5432)):
        [rule] = policies[name]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        assert rule["from"] == [
            {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "switchyard",
                        "app.kubernetes.io/instance": "sy",
                        "app.kubernetes.io/component": "router",
                    }
                }
            }
        ]


def test_the_router_may_change_settings_only_in_the_namespaces_listed(
    control_plane: ControlPlane,
) -> None:
    def bindings(values: list[str]) -> list[dict]:
        out = helm(control_plane, "template", "sy", str(CHART), *_sets(values)).stdout
        return [
            d
            for d in yaml.safe_load_all(out)
            if d
            and d["kind"].endswith("Binding")
            and d["roleRef"]["name"] == "sy-switchyard-router-settings"
        ]

    assert bindings([]) == []  # by default nowhere, and never cluster-wide
    listed = bindings(["router.settingsNamespaces={team-a,team-b}"])
    assert [(b["kind"], b["metadata"]["namespace"]) for b in listed] == [
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]


def test_tracing_values_reach_the_routers(control_plane: ControlPlane) -> None:
    """router.tracing becomes the routers' --otlp-endpoint and --trace-sample; without an
    endpoint, neither flag (nothing traced); a value that is not a URL is refused."""

    def router_args(values: list[str]) -> list[str]:
        out = helm(control_plane, "template", "sy", str(CHART), *_sets(values)).stdout
        [router] = [
            d
            for d in yaml.safe_load_all(out)
            if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("router")
        ]
        args: list[str] = router["spec"]["template"]["spec"]["containers"][0]["args"]
        return args

    assert not [a for a in router_args([]) if "otlp" in a or "trace" in a]
    args = router_args(
        ["router.tracing.otlpEndpoint=http://otel.obs:4318", "router.tracing.sampleRatio=0.25"]
    )
    assert "--otlp-endpoint=http://otel.obs:4318" in args
    assert "--trace-sample=0.25" in args
    bad = helm(
        control_plane, "template", "sy", str(CHART),
        *_sets(["router.tracing.otlpEndpoint=otel:4318"]), check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "otlpEndpoint" in bad.stderr
    bad = helm(
        control_plane, "template", "sy", str(CHART),
        *_sets(["router.tracing.otlpEndpoint=http://o:4318", "router.tracing.sampleRatio=2"]),
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "sampleRatio" in bad.stderr


def test_the_networks_providers_may_reach_are_the_tables(control_plane: ControlPlane) -> None:
    """settings.routing.providerNetworks reaches the settings ConfigMap the operator
    follows, as a routing table section the router's schema takes."""
    from switchyard.router.contract import RoutingSettings
    from switchyard.router.table.settings import parse_settings

    cidrs = '["10.96.0.0/12","fd00::/8"]'
    out = helm(
        control_plane,
        "template",
        "sy",
        str(CHART),
        *_sets([f"settings.routing.providerNetworks.allowCIDRs={cidrs}"]),
    ).stdout
    [cm] = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchyard-settings"
    ]
    settings = parse_settings(cm["data"]["settings.yaml"])
    routing = RoutingSettings.model_validate(settings["routing"])
    assert routing.provider_networks.allow_cidrs == ["10.96.0.0/12", "fd00::/8"]
    # By default nothing is allowed: the cloud types reach the internet only.
    out = helm(control_plane, "template", "sy", str(CHART)).stdout
    [cm] = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchyard-settings"
    ]
    assert "providerNetworks" not in cm["data"]["settings.yaml"]


def test_watched_namespaces_bind_nothing_cluster_wide(control_plane: ControlPlane) -> None:
    """By default the operator reads every namespace's objects and Secrets and the routers
    report on every namespace's models (ClusterRoleBindings); with watchNamespaces, both
    are RoleBindings in those namespaces and the release's own, and the operator is told
    to watch exactly these."""

    def render(values: list[str]) -> list[dict]:
        out = helm(control_plane, "template", "sy", str(CHART), "-n", "gw", *_sets(values))
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    def bindings(docs: list[dict]) -> list[tuple[str, str, str | None]]:
        return sorted(
            (d["kind"], d["roleRef"]["name"], d["metadata"].get("namespace"))
            for d in docs
            if d["kind"].endswith("Binding")
        )

    def watched(docs: list[dict]) -> list[str]:
        operator = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
        )
        args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
        return [a.split("=", 1)[1] for a in args if a.startswith("--watch-namespace=")]

    default = render([])
    assert bindings(default) == [
        ("ClusterRoleBinding", "sy-switchyard-operator-organizations", None),
        ("ClusterRoleBinding", "sy-switchyard-router-reports", None),
        ("RoleBinding", "sy-switchyard-operator", None),
        ("RoleBinding", "sy-switchyard-router", None),
    ]
    assert watched(default) == []
    named = render(["watchNamespaces={team-a,gw,team-b}", "router.settingsNamespaces={team-a}"])
    assert bindings(named) == [
        ("RoleBinding", "sy-switchyard-operator", None),
        ("RoleBinding", "sy-switchyard-operator-organizations", "gw"),
        ("RoleBinding", "sy-switchyard-operator-organizations", "team-a"),
        ("RoleBinding", "sy-switchyard-operator-organizations", "team-b"),
        ("RoleBinding", "sy-switchyard-router", None),
        ("RoleBinding", "sy-switchyard-router-reports", "gw"),
        ("RoleBinding", "sy-switchyard-router-reports", "team-a"),
        ("RoleBinding", "sy-switchyard-router-reports", "team-b"),
        ("RoleBinding", "sy-switchyard-router-settings", "team-a"),
    ]
    assert watched(named) == ["gw", "team-a", "team-b"]


def test_the_notes_say_what_the_release_serves(control_plane: ControlPlane) -> None:
    def notes(values: list[str]) -> str:
        out = helm(
            control_plane, "install", "sy", str(CHART), "-n", "gw", "--dry-run=client",
            *_sets(values),
        ).stdout  # fmt: skip
        return out[out.index("NOTES:") :]

    default = notes([])
    assert "This release serves every namespace" in default
    assert "answers 403 in every namespace (router.settingsNamespaces is empty)" in default
    assert "Only the routers may reach the bundled Redis and PostgreSQL" in default
    assert "admin port (9090)" in default
    named = notes(["watchNamespaces={team-a}", "router.settingsNamespaces={team-a}"])
    assert "serves these namespaces only (watchNamespaces): gw, team-a." in named
    assert "may create providers in: team-a." in named


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["postgresql.enabled=false"], "holds for one replica only"),
        (
            ['settings.routing.providerNetworks.allowCIDRs=["10.0.0.0/33"]'],
            "settings/routing/providerNetworks/allowCIDRs/0",
        ),
        (
            ['settings.routing.providerNetworks.allowCIDR=["10.0.0.0/8"]'],
            "additional properties 'allowCIDR' not allowed",
        ),
        (["postgresql.enabled=false", "router.autoscaling.enabled=true"], "one replica only"),
        (["database.existingSecret=db"], "not both"),
        (["redis.enabled=true", "sharedState.existingSecret=r"], "not both"),
        (["router.replicas=0"], "minimum"),
        (["router.limits.maxHeaderBytes=100"], "minimum"),
        (["router.limits.headerTimeoutSeconds=0"], "exclusiveMinimum"),
        (["router.image.pullPolicy=Sometimes"], "pullPolicy"),
        (["redis.password=two words"], "redis/password"),
        (["watchNamespaces={Team-A}"], "watchNamespaces/0"),
        (["routr.replicas=2"], "additional properties 'routr' not allowed"),
        (["ollama.enabled=true", 'ollama.models=[{"name": "m"}]'], "ollama/models/0"),
        (
            ["ollama.enabled=true", 'ollama.models=[{"name": "m", "pull": "m", "gguf": "/m"}]'],
            "ollama/models/0",
        ),
    ],
)
def test_values_that_cannot_work_are_refused(
    control_plane: ControlPlane, values: list[str], message: str
) -> None:
    out = helm(control_plane, "template", "sy", str(CHART), *_sets(values), check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
