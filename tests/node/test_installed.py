"""Switchyard installed with Helm on a real node, used as a platform team would use it.

One release for the module, in the order a team meets it: install, the router's two
replicas sharing state on the bundled Redis; an LLMProvider for the in-cluster model
server applied by hand turns Ready and serves through the router's Service, its usage
landing in the bundled PostgreSQL; the in-cluster Ollama answers; no pod reaches
anything outside; what each ServiceAccount may do; only the routers reach Redis and
PostgreSQL; a router pod deleted and a ``helm upgrade`` under load; ``helm rollback``;
the operator restarted; ``helm uninstall`` leaving only the CRDs.

The release serves two organizations, as a platform team that names them would install
it: its own namespace and ``team-a`` (``watchNamespaces``), where the routers may also
create providers (``router.settingsNamespaces``); ``team-b`` is a namespace it does not
serve.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.node.cluster import NodeCluster
from tests.node.conftest import NODE_TEST_TIMEOUT
from tests.node.load import SteadyLoad
from tests.node.release import (
    CHART,
    FULL,
    NS,
    RELEASE,
    ROOT,
    Release,
    api_key,
    chart_values,
    deploy_fast_model,
    helm,
    kubectl_json,
    ready_pods,
    serves,
    wait_for,
)

ORG = "team-a"
OTHER = "team-b"  # a namespace the release does not serve
EXAMPLE = ROOT / "examples" / "in-cluster-provider.yaml"

pytestmark = pytest.mark.timeout(NODE_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def release(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    values = tmp_path_factory.mktemp("helm") / "values.json"
    chosen = chart_values(node_cluster.images)
    chosen["watchNamespaces"] = [ORG]
    chosen["router"]["settingsNamespaces"] = [ORG]
    values.write_text(json.dumps(chosen, indent=2))
    for namespace in (ORG, OTHER):  # a RoleBinding needs its namespace
        node_cluster.kubectl("create", "namespace", namespace)
    started = time.monotonic()
    out = helm(
        node_cluster, "install", RELEASE, str(CHART), "--namespace", NS, "--create-namespace",
        "-f", str(values), "--wait", "--timeout=10m", timeout=700,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert f"http://{FULL}-router.{NS}.svc:80" in out.stdout  # NOTES.txt
    url = f"http://{node_cluster.service_ip(NS, f'{FULL}-router')}:80"
    print(f"\nhelm install --wait: {elapsed:.1f} s")
    try:
        yield Release(node_cluster, values, url, elapsed)
    finally:
        subprocess.run(
            [str(node_cluster.bin_dir / "helm"), f"--kubeconfig={node_cluster.kubeconfig}",
             "uninstall", RELEASE, "--namespace", NS, "--wait", "--ignore-not-found"],
            capture_output=True, timeout=300, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def team(release: Release) -> str:
    """An organization of its own (a namespace) and its API key."""
    return api_key(release.cluster, ORG, "ci", "completion,usage:read")


@pytest.fixture(scope="module")
def ops_key(release: Release) -> str:
    """An API key of the release's own namespace: the organization of the chart's models."""
    return api_key(release.cluster, NS, "ops", "completion,usage:read")


def test_install_brings_every_part_up(release: Release, ops_key: str) -> None:
    cluster = release.cluster
    for component in ("operator", "router", "postgresql", "redis", "ollama", "vllm"):
        assert ready_pods(cluster, NS, component), component
    assert len(ready_pods(cluster, NS, "router")) == 2
    assert len(ready_pods(cluster, NS, "vllm")) == 2
    for provider in (f"{FULL}-ollama", f"{FULL}-vllm"):
        cluster.kubectl(
            "-n", NS, "wait", "--for=condition=Ready", f"llmprovider/{provider}", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
    for pod in router_pod_ips(cluster):
        # Readiness and metrics on the admin port; the API port does not serve them.
        assert httpx.get(f"http://{pod}:9090/readyz", timeout=10).json()["status"] == "ready"
        assert httpx.get(f"http://{pod}:8080/metrics", timeout=10).status_code == 404
    assert httpx.get(f"{release.url}/metrics", timeout=10).status_code == 404
    models = wait_for(
        "the chart's models to be served",
        lambda: (
            {
                m["id"]
                for m in httpx.get(
                    f"{release.url}/v1/models",
                    headers={"Authorization": f"Bearer {ops_key}"},
                    timeout=10,
                ).json()["data"]
            }
            >= {"smollm2", "smollm2-llamacpp"}
        ),
    )
    assert models


def test_the_router_replicas_share_state_on_the_bundled_redis(release: Release) -> None:
    """redis.enabled: both replicas reach the chart's Redis and count each other."""
    cluster = release.cluster

    def metrics() -> list[str]:
        return [
            httpx.get(f"http://{ip}:9090/metrics", timeout=5).text for ip in router_pod_ips(cluster)
        ]

    def sharing() -> bool:
        texts = metrics()
        return len(texts) == 2 and all(
            "switchyard_shared_state_up 1.0" in t and "switchyard_shared_state_processes 2.0" in t
            for t in texts
        )

    wait_for("both router replicas to share state on the bundled Redis", sharing, seconds=30)


def test_a_provider_applied_by_hand_turns_ready_and_serves(release: Release, team: str) -> None:
    """The README's example: examples/in-cluster-provider.yaml, applied as it is."""
    cluster = release.cluster
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(EXAMPLE))
    cluster.kubectl(
        "-n", ORG, "wait", "--for=condition=Ready", "llmprovider/in-cluster", "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    wait_for("the model to be served", lambda: serves(team, release.url, "tiny"), seconds=120)
    print(f"\nkubectl apply -> served: {time.monotonic() - started:.2f} s")
    client = openai.OpenAI(base_url=f"{release.url}/v1", api_key=team, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-switchyard-provider"] == "in-cluster"
    record = raw.headers["x-switchyard-request-id"]
    # The usage record is in the bundled PostgreSQL, in the caller's organization.
    postgres = ready_pods(cluster, NS, "postgresql")[0]
    query = (
        "SELECT organization, provider, model, status, prompt_tokens > 0 "
        f"FROM llm_requests WHERE id = '{record}'"
    )
    row = wait_for(
        "the usage record in PostgreSQL",
        lambda: cluster.kubectl(
            "-n", NS, "exec", postgres, "--", "psql", "-U", "switchyard", "-d", "switchyard",
            "-At", "-c", query,
        ).stdout.strip(),
        seconds=30,
    )  # fmt: skip
    assert row == f"{ORG}|in-cluster|tiny|ok|t"


def test_the_in_cluster_ollama_answers(release: Release, ops_key: str) -> None:
    client = openai.OpenAI(base_url=f"{release.url}/v1", api_key=ops_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchyard-provider"] == f"{FULL}-ollama"
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=16,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def pod_ips(cluster: NodeCluster, component: str) -> dict[str, str]:
    """The ready pods of a component, by name, and their addresses."""
    names = set(ready_pods(cluster, NS, component))
    pods = kubectl_json(
        cluster, "-n", NS, "get", "pods", "-l", f"app.kubernetes.io/component={component}"
    )["items"]
    return {
        p["metadata"]["name"]: p["status"]["podIP"] for p in pods if p["metadata"]["name"] in names
    }


def endpoints_per_router(
    cluster: NodeCluster, key: str, provider: str
) -> list[dict[str, dict[str, Any]]]:
    """Each router replica's view of the provider's endpoints."""
    views = []
    for ip in router_pod_ips(cluster):
        r = httpx.get(
            f"http://{ip}:8080/api/v1/llm/providers",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        (p,) = [p for p in r.json()["providers"] if p["name"] == provider]
        views.append({e["address"]: e for e in p["endpoints"]})
    return views


def test_the_routers_call_each_vllm_pod_and_follow_them_under_load(
    release: Release, ops_key: str
) -> None:
    """serviceRef on the real node: the operator follows the vLLM Service's
    EndpointSlices, every router calls the two pods themselves, and a pod deleted under
    load fails no request while the table follows its replacement."""
    cluster = release.cluster
    provider = f"{FULL}-vllm"

    def listed() -> set[str]:
        return {f"{ip}:8000" for ip in pod_ips(cluster, "vllm").values()}

    def agreed(want: set[str]) -> bool:
        views = endpoints_per_router(cluster, ops_key, provider)
        return len(views) == 2 and all(set(v) == want for v in views)

    first = listed()
    assert len(first) == 2
    wait_for("every router to call the vLLM pods", lambda: agreed(first), seconds=60)
    with SteadyLoad(release.url, ops_key, "smollm2-llamacpp", rate=4, threads=2) as load:
        time.sleep(5)
        victim = sorted(pod_ips(cluster, "vllm"))[0]
        started = time.monotonic()
        cluster.kubectl("-n", NS, "delete", "pod", victim, "--wait=false")
        wait_for(
            "a replacement vLLM pod",
            lambda: len([p for p in ready_pods(cluster, NS, "vllm") if p != victim]) == 2,
            seconds=240,
        )
        now = listed()
        wait_for("the routers to follow the pods", lambda: agreed(now), seconds=30)
        print(f"\nvLLM pod replaced, routers following in {time.monotonic() - started:.1f} s")
        time.sleep(5)
    result = load.stop()
    print(f"vLLM pod deleted under load: {result.summary()}")
    assert result.ok > 20
    assert result.failed == 0 and result.retried == 0, result.summary()
    # The load was one conversation (its affinity kept it on one pod); distinct ones
    # spread over both pods, the replacement included.
    before = {
        a: sum(v[a]["picks"] for v in endpoints_per_router(cluster, ops_key, provider)) for a in now
    }
    client = openai.OpenAI(base_url=f"{release.url}/v1", api_key=ops_key, max_retries=0)
    for i in range(16):
        client.chat.completions.create(
            model="smollm2-llamacpp",
            messages=[{"role": "user", "content": f"Conversation {i}: say hi."}],
            max_tokens=4,
        )
    views = endpoints_per_router(cluster, ops_key, provider)
    after = {a: sum(v[a]["picks"] for v in views) for a in now}
    assert all(after[a] > before[a] for a in now), (before, after)
    # The routers read each pod's llama.cpp slots from its /props (the chart's server runs
    # two), so each conversation's calls name their slot.
    wait_for(
        "a router to know both pods' slots",
        lambda: any(
            sorted(e["slots"] or 0 for e in v.values()) == [2, 2]
            for v in endpoints_per_router(cluster, ops_key, provider)
        ),
        seconds=10,
    )


def test_no_pod_reaches_anything_outside_the_cluster(release: Release) -> None:
    pod = ready_pods(release.cluster, NS, "router")[0]
    probe = """
import socket, sys
try:
    socket.getaddrinfo("pypi.org", 443)
    sys.exit("resolved pypi.org")
except OSError:
    pass
for host in ("192.0.2.1", "1.1.1.1"):
    try:
        socket.create_connection((host, 80), timeout=2).close()
        sys.exit("reached " + host)
    except OSError:
        pass
socket.create_connection(("switchyard-postgresql.switchyard.svc", 5432), timeout=5).close()
print("inside only")
"""
    out = release.cluster.kubectl("-n", NS, "exec", pod, "--", "python3", "-c", probe, timeout=60)
    assert out.stdout.strip() == "inside only"


def router_pod_ips(cluster: NodeCluster) -> list[str]:
    pods = kubectl_json(
        cluster, "-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=router"
    )["items"]
    return [
        p["status"]["podIP"]
        for p in pods
        if p["metadata"].get("deletionTimestamp") is None and p["status"].get("podIP")
    ]


#: (ServiceAccount, verb, resource, namespace or "" for every namespace, allowed)
CAN_I: list[tuple[str, str, str, str, bool]] = [
    # The router faces every tenant: it reads its table and keys, creates providers and
    # their key Secrets in router.settingsNamespaces only, and reports on the models of
    # the organizations served; nothing cluster-wide.
    (f"{FULL}-router", "get", "configmaps", NS, True),
    (f"{FULL}-router", "get", "secrets/switchyard-provider-keys", NS, True),
    (f"{FULL}-router", "get", "secrets/switchyard-database", NS, False),
    (f"{FULL}-router", "get", "secrets/switchyard-redis", NS, False),
    (f"{FULL}-router", "list", "secrets", NS, False),
    (f"{FULL}-router", "list", "secrets", "", False),
    (f"{FULL}-router", "create", "secrets", "kube-system", False),
    (f"{FULL}-router", "create", "secrets", NS, False),
    (f"{FULL}-router", "create", "secrets", ORG, True),
    (f"{FULL}-router", "create", "secrets", OTHER, False),
    (f"{FULL}-router", "create", "llmproviders.switchyard.dev", ORG, True),
    (f"{FULL}-router", "patch", "llmproviders.switchyard.dev", ORG, True),
    (f"{FULL}-router", "create", "llmproviders.switchyard.dev", OTHER, False),
    (f"{FULL}-router", "patch", "llmproviders.switchyard.dev", OTHER, False),
    (f"{FULL}-router", "delete", "llmproviders.switchyard.dev", ORG, False),
    (f"{FULL}-router", "patch", "llmmodels.switchyard.dev --subresource=status", ORG, True),
    (f"{FULL}-router", "patch", "llmmodels.switchyard.dev --subresource=status", OTHER, False),
    (f"{FULL}-router", "patch", "llmmodels.switchyard.dev --subresource=status", "", False),
    (f"{FULL}-router", "create", "pods", NS, False),
    # The pods behind an LLMProvider's serviceRef are the operator's to follow, read only.
    (f"{FULL}-router", "list", "endpointslices.discovery.k8s.io", NS, False),
    # The operator reads the served organizations' objects and keys, writes their status,
    # and publishes in its own namespace only; nothing cluster-wide.
    (f"{FULL}-operator", "list", "llmproviders.switchyard.dev", ORG, True),
    (f"{FULL}-operator", "list", "llmproviders.switchyard.dev", OTHER, False),
    (f"{FULL}-operator", "list", "llmproviders.switchyard.dev", "", False),
    (f"{FULL}-operator", "patch", "llmproviders.switchyard.dev --subresource=status", ORG, True),
    (f"{FULL}-operator", "patch", "llmproviders.switchyard.dev", ORG, False),
    (f"{FULL}-operator", "delete", "llmproviders.switchyard.dev", ORG, False),
    (f"{FULL}-operator", "list", "secrets", NS, True),
    (f"{FULL}-operator", "list", "secrets", ORG, True),
    (f"{FULL}-operator", "list", "secrets", OTHER, False),
    (f"{FULL}-operator", "get", "secrets", "kube-system", False),
    (f"{FULL}-operator", "list", "secrets", "", False),
    (f"{FULL}-operator", "create", "secrets", "kube-system", False),
    (f"{FULL}-operator", "create", "secrets", ORG, False),
    (f"{FULL}-operator", "update", "configmaps", NS, True),
    (f"{FULL}-operator", "create", "configmaps", ORG, False),
    (f"{FULL}-operator", "create", "pods", NS, False),
    (f"{FULL}-operator", "watch", "endpointslices.discovery.k8s.io", NS, True),
    (f"{FULL}-operator", "watch", "endpointslices.discovery.k8s.io", ORG, True),
    (f"{FULL}-operator", "watch", "endpointslices.discovery.k8s.io", OTHER, False),
    (f"{FULL}-operator", "create", "endpointslices.discovery.k8s.io", NS, False),
    (f"{FULL}-operator", "list", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    # Redis, PostgreSQL and the model servers run as the namespace's default account,
    # and mount no token.
    ("default", "get", "secrets", NS, False),
    ("default", "list", "pods", NS, False),
    ("default", "create", "secrets", ORG, False),
]


def test_what_each_service_account_may_and_may_not_do(release: Release) -> None:
    """Checked with kubectl auth can-i against the installed release's RBAC."""
    rows = []
    for account, verb, resource, namespace, _ in CAN_I:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        out = release.cluster.kubectl(
            "auth", "can-i", verb, *resource.split(), *where,
            f"--as=system:serviceaccount:{NS}:{account}", check=False,
        ).stdout.strip()  # fmt: skip
        rows.append((account, verb, resource, namespace or "*", out))
    print("\n" + "\n".join(f"{a:22} {v:7} {r:38} {n:12} {o}" for a, v, r, n, o in rows))
    assert [o for *_, o in rows] == ["yes" if allowed else "no" for *_, allowed in CAN_I]
    mounted = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"].get(
            "automountServiceAccountToken", True
        )
        for p in kubectl_json(release.cluster, "-n", NS, "get", "pods")["items"]
    }
    assert mounted == {
        "operator": True,
        "router": True,
        "postgresql": False,
        "redis": False,
        "ollama": False,
        "vllm": False,
    }
    # With watchNamespaces, nothing of the release is bound cluster-wide.
    assert [
        b["metadata"]["name"]
        for b in kubectl_json(
            release.cluster, "get", "clusterrolebindings",
            "-l", f"app.kubernetes.io/instance={RELEASE}",
        )["items"]
    ] == []  # fmt: skip


@pytest.fixture(scope="module")
def fast_model(release: Release, team: str) -> str:
    """A fast fake OpenAI server in the organization's namespace, for steady load."""
    deploy_fast_model(release.cluster, ORG, "fast")
    wait_for("the fast model", lambda: serves(team, release.url, "fast"), seconds=120)
    return "fast"


#: Run in a pod: try each "host:port" given; print what became of it.
REACH = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "reached")
    except OSError as exc:
        print(target, type(exc).__name__)
"""

#: Run in a pod: speak to Redis without its password.
NO_PASSWORD = f"""
import socket
s = socket.create_connection(("{FULL}-redis.{NS}.svc", 6379), timeout=5)
s.sendall(b"PUBLISH switchyard:breakers 1\\r\\nPING\\r\\n")
print(s.recv(200).decode().splitlines()[0])
"""


@pytest.fixture(scope="module")
def stranger(release: Release) -> Iterator[str]:
    """A throwaway pod in a namespace the release does not serve, from an image the node
    has: any other tenant's workload."""
    cluster = release.cluster
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stranger", "namespace": OTHER},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "stranger",
                    "image": cluster.images["router"].ref,
                    "imagePullPolicy": "Never",
                    "command": [
                        "/opt/switchyard/bin/python",
                        "-c",
                        "import time; time.sleep(3600)",
                    ],
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("-n", OTHER, "wait", "--for=condition=Ready", "pod/stranger", "--timeout=120s",
                    timeout=130)  # fmt: skip
    yield "stranger"
    cluster.kubectl("-n", OTHER, "delete", "pod", "stranger", "--wait=false", check=False)


def test_only_the_routers_reach_redis_and_postgresql(release: Release, stranger: str) -> None:
    """The chart's NetworkPolicies, enforced by the node's network: a pod that is not a
    router (another tenant's, in another namespace; the operator, in the release's own)
    reaches neither Redis nor PostgreSQL, by Service or by pod address, while the routers
    do; and Redis refuses everything without its password, even to a router."""
    cluster = release.cluster

    def pod_ip(component: str) -> str:
        pods = kubectl_json(
            cluster, "-n", NS, "get", "pods", "-l", f"app.kubernetes.io/component={component}"
        )["items"]
        return str(pods[0]["status"]["podIP"])

    targets = [
        f"{FULL}-redis.{NS}.svc:6379",
        f"{FULL}-postgresql.{NS}.svc:5432",
        f"{pod_ip('redis')}:6379",
        f"{pod_ip('postgresql')}:5432",
    ]

    def reach(namespace: str, pod: str) -> dict[str, str]:
        out = cluster.kubectl(
            "-n", namespace, "exec", pod, "--", "/opt/switchyard/bin/python", "-c", REACH,
            *targets, timeout=60,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    reached = {t: "reached" for t in targets}
    router = ready_pods(cluster, NS, "router")[0]
    assert reach(NS, router) == reached
    for namespace, pod in ((OTHER, stranger), (NS, ready_pods(cluster, NS, "operator")[0])):
        got = reach(namespace, pod)
        assert set(got) == set(targets) and "reached" not in got.values(), (pod, got)
    answer = cluster.kubectl(
        "-n", NS, "exec", router, "--", "/opt/switchyard/bin/python", "-c", NO_PASSWORD,
        timeout=60,
    ).stdout.strip()  # fmt: skip
    assert answer.startswith("-NOAUTH"), answer
    policies = kubectl_json(cluster, "-n", NS, "get", "networkpolicies")["items"]
    assert {p["metadata"]["name"] for p in policies} == {f"{FULL}-redis", f"{FULL}-postgresql"}


def test_a_router_pod_deleted_under_load(release: Release, team: str, fast_model: str) -> None:
    cluster = release.cluster
    with SteadyLoad(release.url, team, fast_model, rate=25) as load:
        time.sleep(4)
        victim = ready_pods(cluster, NS, "router")[0]
        cluster.kubectl("-n", NS, "delete", "pod", victim, "--wait=false")
        wait_for(
            "a replacement router",
            lambda: len([p for p in ready_pods(cluster, NS, "router") if p != victim]) == 2,
            seconds=120,
        )
        time.sleep(4)
    result = load.stop()
    print(f"\nrouter pod deleted under load: {result.summary()}")
    assert result.ok > 100
    assert result.failed == 0 and result.retried == 0, result.summary()


def test_helm_upgrade_under_load_fails_nothing(
    release: Release, team: str, fast_model: str
) -> None:
    cluster = release.cluster
    before = ready_pods(cluster, NS, "router")
    with SteadyLoad(release.url, team, fast_model, rate=25) as load:
        time.sleep(3)
        release.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", NS, "-f", str(release.values),
            "--set", "router.logLevel=warning", "--wait", "--timeout=5m",
        )  # fmt: skip
        time.sleep(3)
    result = load.stop()
    print(f"\nhelm upgrade under load: {result.summary()}")
    after = ready_pods(cluster, NS, "router")
    assert not set(before) & set(after)  # every router was replaced
    assert result.ok > 50
    assert result.failed == 0 and result.retried == 0, result.summary()
    args = kubectl_json(cluster, "-n", NS, "get", "deployment", f"{FULL}-router")
    assert "--log-level=warning" in args["spec"]["template"]["spec"]["containers"][0]["args"]


def test_helm_rollback(release: Release, team: str, fast_model: str) -> None:
    cluster = release.cluster
    release.helm("rollback", RELEASE, "1", "--namespace", NS, "--wait", "--timeout=5m")
    deployment = kubectl_json(cluster, "-n", NS, "get", "deployment", f"{FULL}-router")
    assert "--log-level=info" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    history = json.loads(release.helm("history", RELEASE, "--namespace", NS, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2, 3]
    assert "Rollback to 1" in history[-1]["description"]
    wait_for("serving after the rollback", lambda: serves(team, release.url, fast_model))


def test_a_restarted_operator_keeps_the_table(release: Release, team: str, fast_model: str) -> None:
    cluster = release.cluster
    table = kubectl_json(cluster, "-n", NS, "get", "configmap", "switchyard-routing")
    checksum = table["metadata"]["annotations"]["switchyard.dev/checksum"]
    owners = table["metadata"]["ownerReferences"]
    assert [o["name"] for o in owners] == ["switchyard-settings"]
    old = ready_pods(cluster, NS, "operator")
    with SteadyLoad(release.url, team, fast_model, rate=10) as load:
        cluster.kubectl("-n", NS, "delete", "pod", *old)
        wait_for(
            "a new operator",
            lambda: [p for p in ready_pods(cluster, NS, "operator") if p not in old],
            seconds=120,
        )
        time.sleep(8)  # it lists everything and compiles
    result = load.stop()
    print(f"\noperator restarted under load: {result.summary()}")
    after = kubectl_json(cluster, "-n", NS, "get", "configmap", "switchyard-routing")
    assert after["metadata"]["annotations"]["switchyard.dev/checksum"] == checksum
    assert after["metadata"]["resourceVersion"] == table["metadata"]["resourceVersion"]
    assert result.failed == 0 and result.retried == 0, result.summary()


def test_uninstall_leaves_only_the_crds(release: Release) -> None:
    cluster = release.cluster
    release.helm("uninstall", RELEASE, "--namespace", NS, "--wait", "--timeout=5m")
    kinds = ",".join(
        [
            "deployments",
            "statefulsets",
            "services",
            "configmaps",
            "secrets",
            "pvc",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "llmproviders",
            "llmmodels",
        ]
    )

    def left() -> list[str]:
        items = kubectl_json(cluster, "-n", NS, "get", kinds)["items"]
        ours = []
        for item in items:
            name, labels = item["metadata"]["name"], item["metadata"].get("labels") or {}
            if (item["kind"], name) in {
                ("ConfigMap", "kube-root-ca.crt"),
                ("ServiceAccount", "default"),
            }:
                continue
            if labels.get("switchyard.dev/api-key") == "true":
                continue  # the test's own API key, not the release's
            ours.append(f"{item['kind']}/{name}")
        pods = kubectl_json(cluster, "-n", NS, "get", "pods")["items"]
        return ours + [f"Pod/{p['metadata']['name']}" for p in pods]

    wait_for("the release's objects to go", lambda: left() == [], seconds=120)
    cluster_wide = kubectl_json(
        cluster, "get", "clusterroles,clusterrolebindings,persistentvolumeclaims",
        "-A", "-l", f"app.kubernetes.io/instance={RELEASE}",
    )["items"]  # fmt: skip
    assert cluster_wide == []
    bindings = kubectl_json(
        cluster, "-n", ORG, "get", "rolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}"
    )["items"]
    assert bindings == []
    crds = {c["metadata"]["name"] for c in kubectl_json(cluster, "get", "crds")["items"]}
    assert {
        "llmproviders.switchyard.dev",
        "llmmodels.switchyard.dev",
        "prompttemplates.switchyard.dev",
    } <= crds
