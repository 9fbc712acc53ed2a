"""The operator against a real API server, with the router following its ConfigMap.

The operator runs in-process (kopf's KopfRunner) as a user holding exactly the
operator's RBAC; the router runs as a process holding exactly the router's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from kopf.testing import KopfRunner

from switchyard.router.providers import addresses
from tests.fakes import FakeOpenAI, FakeVLLM, Fault
from tests.kube.controlplane import ControlPlane, User
from tests.kube.fixtures import KUBE_TEST_TIMEOUT
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(KUBE_TEST_TIMEOUT)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
RBAC = ROOT / "helm" / "switchyard" / "files"
OPENAI_KEY = "sk-fake-openai-key-42"


def user(cp: ControlPlane, name: str) -> User:
    return next(u for u in cp.users if u.name == name)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a condition that cannot be evaluated yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl(*args, "-o", "json").stdout)


def bind(cp: ControlPlane, system: str) -> None:
    """The shipped RBAC, bound to the operator's and the router's users as the chart binds
    it with its default values: what the operator does in the organizations' namespaces
    and the router's reports cluster-wide, their Roles in the system namespace, and the
    router's settings role nowhere (``bind_settings`` binds it in one namespace)."""
    for path in (RBAC / "rbac-operator.yaml", RBAC / "rbac-router.yaml"):
        cp.kubectl("apply", "-n", system, "-f", str(path))
    bindings = [
        ("clusterrolebinding", "--clusterrole=switchyard-operator-organizations", "operator", None),
        ("rolebinding", "--role=switchyard-operator", "operator", system),
        ("rolebinding", "--role=switchyard-router", "router", system),
        ("clusterrolebinding", "--clusterrole=switchyard-router-reports", "router", None),
    ]
    for kind, role, who, ns in bindings:
        name = f"{role.split('=')[1]}-{system}"
        args = ["create", kind, name, role, f"--user=switchyard-{who}"]
        cp.kubectl(*args, *(["-n", ns] if ns else []))


def bind_settings(cp: ControlPlane, namespace: str) -> None:
    """The router's settings role in one namespace, as router.settingsNamespaces binds it."""
    cp.kubectl(
        "create", "rolebinding", "switchyard-router-settings", "-n", namespace,
        "--clusterrole=switchyard-router-settings", "--user=switchyard-router",
    )  # fmt: skip


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeVLLM]]:
    with FakeOpenAI(api_key=OPENAI_KEY) as oa, FakeVLLM(api_key=None) as vl:
        yield oa, vl


@pytest.fixture(scope="module")
def system(control_plane: ControlPlane) -> str:
    control_plane.kubectl("apply", "-f", str(CRDS))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/llmproviders.switchyard.dev",
        "crd/llmmodels.switchyard.dev",
        "crd/prompttemplates.switchyard.dev",
    )
    name = f"switchyard-{os.urandom(3).hex()}"
    control_plane.kubectl("create", "namespace", name)
    bind(control_plane, name)
    # The fake cloud providers listen on loopback, which a cloud provider type may not
    # reach unless the table allows it.
    control_plane.kubectl(
        "create",
        "configmap",
        "switchyard-settings",
        "-n",
        name,
        "--from-literal=settings.yaml=routing: {providerNetworks: {allowCIDRs: [127.0.0.0/8]}}",
    )
    return name


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, system: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KopfRunner]:
    config = control_plane.write_kubeconfig(
        tmp_path_factory.mktemp("op") / "kubeconfig", user(control_plane, "switchyard-operator")
    )
    env = {"KUBECONFIG": str(config), "SWITCHYARD_NAMESPACE": system}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", "-m", "switchyard.operator.main"],
        timeout=60,
    )
    try:
        with runner:
            yield runner
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert runner.exception is None, runner.exception
    assert "Traceback" not in runner.output, runner.output[-4000:]


@pytest.fixture(scope="module")
def router(
    control_plane: ControlPlane,
    system: str,
    operator: KopfRunner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("router")
    config = control_plane.write_kubeconfig(
        work / "kubeconfig", user(control_plane, "switchyard-router")
    )
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--admin-port",
            str(admin),
            "--routing-configmap",
            f"{system}/switchyard-routing",
            "--provider-keys-secret",
            f"{system}/switchyard-provider-keys",
            "--kubeconfig",
            str(config),
            "--port",
            str(port),
            "--state-dir",
            str(work / "state"),
            "--log-level",
            "warning",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "the router to listen",
            lambda: httpx.get(f"http://127.0.0.1:{admin}/healthz").status_code == 200,
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def create_api_key(cp: ControlPlane, ns: str, name: str) -> str:
    config = cp.kubeconfig
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "create-api-key",
            "--namespace",
            ns,
            "--name",
            name,
            "--scopes",
            "completion",
            "usage:read",
            "settings:write",
            "--kubeconfig",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = re.search(r"^(sy-\S+)$", out, re.M)
    assert key is not None, out
    return key.group(1)


def apply(cp: ControlPlane, ns: str, *objects: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    return cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc), check=False)


def provider(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": name},
        "spec": {"baseUrl": url, **spec},
    }


def model(obj_name: str, provider_name: str, model_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "LLMModel",
        "metadata": {"name": obj_name},
        "spec": {
            "providerRef": {"name": provider_name},
            "modelName": model_name,
            "contextWindow": 32000,
            "maxOutputTokens": 4096,
            **spec,
        },
    }


def status(cp: ControlPlane, ns: str, kind: str, name: str) -> dict[str, Any]:
    return dict(kubectl_json(cp, "get", "-n", ns, kind, name).get("status") or {})


def ready(st: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})


def test_from_kubectl_apply_to_a_served_completion_and_back(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    cp = control_plane
    fake_openai, fake_vllm = fakes
    key = create_api_key(cp, namespace, "team-key")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai-key"},
        "stringData": {"apiKey": OPENAI_KEY},
    }
    applied = apply(
        cp,
        namespace,
        secret,
        provider(
            "openai",
            fake_openai.url,
            providerType="openai",
            priority=1,
            apiKeySecretRef={"name": "openai-key"},
        ),
        provider("backup", fake_vllm.url, providerType="vllm", priority=2),
        model("chat", "openai", "gpt-4o-mini"),
        model("chat-backup", "backup", "meta-llama/Llama-3.1-8B-Instruct", name="chat"),
    )
    assert applied.returncode == 0, applied.stderr
    client = openai.OpenAI(base_url=f"{router}/v1", api_key=key, max_retries=0)

    def served_models() -> list[str]:
        return sorted(m.id for m in client.models.list())

    wait_for("the router to serve the model", lambda: served_models() == ["chat"])
    resp = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello cluster"}]
    )
    assert resp.headers["x-switchyard-provider"] == "openai"
    assert resp.parse().choices[0].message.content == "Echo: hello cluster"
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"

    # The operator probed the provider and said so in its status and events.
    st = wait_for(
        "a healthy provider",
        lambda: (s := status(cp, namespace, "llmp", "openai")).get("health") == "healthy" and s,
    )
    assert ready(st)["status"] == "True"
    assert "gpt-4o-mini" in st["discoveredModels"]
    assert st["observedGeneration"] == 1
    # The model's status is written after the table it went into: wait for it.
    model_ready = wait_for(
        "the model's Ready condition",
        lambda: ready(status(cp, namespace, "llmm", "chat")),
    )
    assert model_ready["reason"] == "Compiled"
    events = cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ModelsDiscovered" in events
    # No key in the ConfigMap; the key is in the operator's Secret.
    system = next(
        n
        for n in kubectl_json(cp, "get", "ns")["items"]
        if n["metadata"]["name"].startswith("switchyard-")
    )["metadata"]["name"]
    cm = cp.kubectl("get", "cm", "-n", system, "switchyard-routing", "-o", "yaml").stdout
    assert OPENAI_KEY not in cm and f"{namespace}.openai" in cm

    # The provider starts failing: three fresh probes later it is unhealthy, the
    # table says so, and the router sends the model's traffic to the backup.
    fake_openai.stop()
    try:
        for i in range(3):
            cp.kubectl(
                "annotate",
                "-n",
                namespace,
                "llmp",
                "openai",
                "--overwrite",
                f"switchyard.dev/probe-requested-at=t{i}-{time.time()}",
            )
            wait_for(
                f"failure {i + 1}",
                lambda i=i: (
                    status(cp, namespace, "llmp", "openai").get("consecutiveFailures") == i + 1
                ),
            )
        st = status(cp, namespace, "llmp", "openai")
        assert st["health"] == "unhealthy"
        assert ready(st)["status"] == "False" and ready(st)["reason"] == "HealthCheckFailed"
        assert (
            "HealthCheckFailed" in cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        )

        def table_says_unhealthy() -> bool:
            providers = httpx.get(
                f"{router}/api/v1/llm/providers", headers={"Authorization": f"Bearer {key}"}
            ).json()["providers"]
            return {p["name"]: p for p in providers}["openai"]["healthStatus"] == "unhealthy"

        wait_for("the router to learn of it", table_says_unhealthy)
        resp = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "still there?"}]
        )
        assert resp.headers["x-switchyard-provider"] == "backup"
    finally:
        fake_openai.start()

    # A deleted model disappears from /v1/models.
    cp.kubectl("delete", "-n", namespace, "llmm", "chat-backup", "chat")
    wait_for("the model to disappear", lambda: served_models() == [])


def test_models_waiting_for_a_provider_say_so(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    cp = control_plane
    assert (
        apply(cp, namespace, model("early", "later", "meta-llama/Llama-3.1-8B-Instruct")).returncode
        == 0
    )
    st = wait_for("a status", lambda: ready(status(cp, namespace, "llmm", "early")) or None)
    assert (st["status"], st["reason"]) == ("False", "ProviderNotFound")
    assert (
        apply(cp, namespace, provider("later", fakes[1].url, providerType="vllm")).returncode == 0
    )
    wait_for(
        "the model to become ready",
        lambda: ready(status(cp, namespace, "llmm", "early")).get("status") == "True",
    )


def serving(st: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == "Serving"), {})


def test_a_model_its_provider_does_not_serve_says_so_on_its_own_object(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    cp = control_plane
    vllm = "meta-llama/Llama-3.1-8B-Instruct"
    applied = apply(
        cp,
        namespace,
        provider("local", fakes[1].url, providerType="vllm"),
        model("right", "local", vllm),
        model("typo", "local", vllm + "-typo"),
    )
    assert applied.returncode == 0, applied.stderr
    st = wait_for("a verdict", lambda: serving(status(cp, namespace, "llmm", "typo")) or None)
    assert (st["status"], st["reason"]) == ("False", "ModelNotServed")
    assert "-typo" in st["message"]
    right = wait_for("a verdict", lambda: serving(status(cp, namespace, "llmm", "right")) or None)
    assert (right["status"], right["reason"]) == ("True", "ProviderServesModel")
    # The compiler's Ready condition and the probe's Serving condition live side by side.
    both = wait_for(
        "the compiler's verdict",
        lambda: st if ready(st := status(cp, namespace, "llmm", "typo")) else None,
    )
    assert ready(both)["status"] == "True" and serving(both)["status"] == "False"
    assert "ModelNotServed" in cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    columns = cp.kubectl("get", "-n", namespace, "llmm", "typo").stdout.split("\n")
    assert "SERVING" in columns[0] and "False" in columns[1]
    # Fixed: the next probe says it is served.
    fix = model("typo", "local", vllm)
    assert apply(cp, namespace, fix).returncode == 0
    cp.kubectl(
        "annotate",
        "-n",
        namespace,
        "llmp",
        "local",
        "--overwrite",
        f"switchyard.dev/probe-requested-at={time.time()}",
    )
    wait_for(
        "the model to be served",
        lambda: serving(status(cp, namespace, "llmm", "typo")).get("status") == "True",
    )


def test_a_model_the_router_takes_out_says_so_on_its_own_object(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    cp = control_plane
    vllm = "meta-llama/Llama-3.1-8B-Instruct"
    assert (
        apply(
            cp,
            namespace,
            provider("toolless", fakes[1].url, providerType="vllm"),
            model("llama", "toolless", vllm, supportsFunctionCalling=True),
        ).returncode
        == 0
    )
    wait_for(
        "the probe's verdict",
        lambda: serving(status(cp, namespace, "llmm", "llama")).get("status") == "True",
    )
    key = create_api_key(cp, namespace, "tools")
    client = openai.OpenAI(base_url=f"{router}/v1", api_key=key, max_retries=0)
    wait_for("the router to serve it", lambda: [m.id for m in client.models.list()] == ["llama"])
    # The table says it takes tools; the server says otherwise, five times.
    refusal = "this model does not support tools"
    fakes[1].push(*[Fault.error(400, message=refusal) for _ in range(5)])
    for _ in range(5):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="llama",
                messages=[{"role": "user", "content": "weather in Paris?"}],
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "parameters": {"type": "object"}},
                    }
                ],
            )
    st = wait_for(
        "the model to be out",
        lambda: (
            c
            if (c := serving(status(cp, namespace, "llmm", "llama"))).get("status") == ("False")
            else None
        ),
    )
    assert st["reason"] == "ModelFailing" and refusal in st["message"]
    seen = status(cp, namespace, "llmm", "llama")["router"]
    assert seen["state"] == "out" and seen["retrySeconds"] > 0


def test_a_missing_secret_is_a_condition_not_a_crash(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
    operator: KopfRunner,
) -> None:
    cp = control_plane
    assert (
        apply(
            cp,
            namespace,
            provider(
                "keyless", fakes[0].url, providerType="openai", apiKeySecretRef={"name": "not-yet"}
            ),
        ).returncode
        == 0
    )
    st = wait_for("a status", lambda: ready(status(cp, namespace, "llmp", "keyless")) or None)
    assert (st["status"], st["reason"]) == ("False", "ApiKeyMissing")
    assert "not-yet" in st["message"]
    # The Secret appears: the operator reacts without a restart.
    apply(
        cp,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "not-yet"},
            "stringData": {"apiKey": OPENAI_KEY},
        },
    )
    wait_for(
        "the provider to become ready",
        lambda: ready(status(cp, namespace, "llmp", "keyless")).get("status") == "True",
    )


def test_a_base_url_the_address_policy_refuses_is_a_condition_and_a_400(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    """A tenant's provider pointed at the cloud's metadata service is refused by the API
    server as it is applied; written another way, or a cloud type pointed at the
    cluster's own API, it is never probed and says why on its object; and the router's
    API refuses to create either, or a baseUrl with a query string."""
    cp = control_plane
    refused = apply(
        cp, namespace, provider("imds", "http://169.254.169.254/latest", providerType="vllm")
    )
    assert refused.returncode != 0
    assert "baseUrl may not name a link-local or cloud metadata address" in refused.stderr
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ssrf-key"},
        "stringData": {"apiKey": OPENAI_KEY},
    }
    ref = {"name": "ssrf-key"}
    assert (
        apply(
            cp,
            namespace,
            secret,
            # 169.254.169.254 through NAT64: not the CRD's to know, the operator's.
            provider("metadata", "http://[64:ff9b::a9fe:a9fe]/v1", providerType="vllm"),
            # The kubernetes Service's address (this API server's 10.0.0.0/24).
            provider(
                "apiserver", "https://10.0.0.1/v1", providerType="openai", apiKeySecretRef=ref
            ),
        ).returncode
        == 0
    )
    for name, why in (("metadata", "metadata"), ("apiserver", "private")):
        st = wait_for(
            f"{name}'s condition",
            lambda name=name: ready(status(cp, namespace, "llmp", name)) or None,
        )
        assert (st["status"], st["reason"]) == ("False", "BaseUrlRefused")
        assert why in st["message"]
    assert "BaseUrlRefused" in cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    key = create_api_key(cp, namespace, "ssrf-admin")
    auth = {"Authorization": f"Bearer {key}"}
    wait_for(
        "the key to be served",
        lambda: httpx.get(f"{router}/api/v1/llm/providers", headers=auth).status_code == 200,
    )
    for url in ("http://169.254.169.254/", "http://llama:8000/v1?x=", "http://u:p@llama/v1"):
        r = httpx.post(
            f"{router}/api/v1/llm/providers",
            headers=auth,
            json={"name": "via-api-ssrf", "providerType": "vllm", "baseUrl": url},
        )
        assert r.status_code == 400 and r.json()["error"]["field"] == "baseUrl", r.text
    r = httpx.post(
        f"{router}/api/v1/llm/providers",
        headers=auth,
        json={
            "name": "via-api-ssrf",
            "providerType": "openai",
            "baseUrl": "https://10.0.0.1/v1",
            "apiKey": OPENAI_KEY,
        },
    )
    assert r.status_code == 400 and "private" in r.json()["error"]["message"], r.text
    assert cp.kubectl("get", "-n", namespace, "llmp", "via-api-ssrf", check=False).returncode != 0


class _Rebound(addresses.DefaultResolver):
    """DNS that points a public-looking name at the cluster's own API server's address."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
        return await super().resolve(
            "10.0.0.1" if host == "api.rebound.example" else host, port, family
        )


def test_a_name_resolving_to_a_refused_address_is_refused_when_the_operator_probes(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator (in this process) resolves the name and refuses the address as it
    connects: the object says BaseUrlRefused, and never says the address."""
    monkeypatch.setattr(addresses, "DefaultResolver", _Rebound)
    cp = control_plane
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rebound-key"},
        "stringData": {"apiKey": OPENAI_KEY},
    }
    assert (
        apply(
            cp,
            namespace,
            secret,
            provider(
                "rebound",
                "https://api.rebound.example/v1",
                providerType="openai",
                apiKeySecretRef={"name": "rebound-key"},
            ),
        ).returncode
        == 0
    )
    st = wait_for(
        "the refusal",
        lambda: (s := status(cp, namespace, "llmp", "rebound")).get("conditions") and s,
    )
    assert st["health"] == "unhealthy"
    assert (ready(st)["status"], ready(st)["reason"]) == ("False", "BaseUrlRefused")
    assert "resolves to a private" in st["message"]
    assert "10.0.0.1" not in json.dumps(st)


class _NotAnLLM(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>internal admin console: db password hunter2</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_that_is_not_an_llms_error_never_reaches_the_status(
    control_plane: ControlPlane, router: str, namespace: str
) -> None:
    """A provider pointed at a server that is not an LLM API: its page is in neither the
    status, the events, nor a health check's answer."""
    cp = control_plane
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        assert apply(cp, namespace, provider("console", url, providerType="vllm")).returncode == 0
        st = wait_for(
            "a probe",
            lambda: (s := status(cp, namespace, "llmp", "console")).get("lastCheckTime") and s,
        )
        assert st["message"] == "HTTP 404: provider error", st
        key = create_api_key(cp, namespace, "console-admin")
        auth = {"Authorization": f"Bearer {key}"}
        wait_for(
            "the key to be served",
            lambda: httpx.get(f"{router}/api/v1/llm/providers", headers=auth).status_code == 200,
        )
        bind_settings(cp, namespace)

        def check() -> httpx.Response | None:
            answer = httpx.post(
                f"{router}/api/v1/llm/providers/console/health-check", headers=auth, timeout=30
            )
            return None if answer.status_code == 403 else answer  # the binding not seen yet

        r = wait_for("the router's settings role to take effect", check)
        assert r.status_code == 200 and "provider error" in r.json()["message"], r.text
        events = cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        for text in (json.dumps(status(cp, namespace, "llmp", "console")), r.text, events):
            assert "hunter2" not in text and "admin console" not in text
    finally:
        server.shutdown()


def test_what_a_cloud_type_may_reach_follows_the_settings(
    control_plane: ControlPlane,
    router: str,
    system: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    """The chart's settings.routing.providerNetworks, through the settings ConfigMap: a cloud
    type on loopback is refused by the operator and the router until it is allowed, then
    probed at once and served."""
    cp = control_plane
    allowing = cp.kubectl("get", "cm", "-n", system, "switchyard-settings", "-o", "json").stdout
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "switchyard-settings"},
        "data": {"settings.yaml": "routing: {maxAttempts: 2}\n"},
    }
    key = create_api_key(cp, namespace, "networks-key")
    client = openai.OpenAI(base_url=f"{router}/v1", api_key=key, max_retries=0)
    try:
        assert apply(cp, system, settings).returncode == 0
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "loop-key"},
            "stringData": {"apiKey": OPENAI_KEY},
        }
        applied = apply(
            cp,
            namespace,
            secret,
            provider(
                "loop",
                fakes[0].url,
                providerType="openai",
                apiKeySecretRef={"name": "loop-key"},
                healthCheck={"intervalSeconds": 3600},
            ),
            model("loop-chat", "loop", "gpt-4o-mini"),
        )
        assert applied.returncode == 0, applied.stderr
        st = wait_for(
            "the refusal",
            lambda: (
                ready(status(cp, namespace, "llmp", "loop")).get("reason") == "BaseUrlRefused"
                and status(cp, namespace, "llmp", "loop")
            ),
        )
        assert "private, loopback" in st["message"]
        auth = {"Authorization": f"Bearer {key}"}

        def routers_refusal() -> str | None:
            listed = httpx.get(f"{router}/api/v1/llm/providers", headers=auth).json()
            return {p["name"]: p for p in listed["providers"]}["loop"]["refused"]

        assert "private, loopback" in wait_for("the router's refusal", routers_refusal)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model="loop-chat", messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.status_code in (404, 503)
    finally:
        restore = json.loads(allowing)
        for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            restore["metadata"].pop(k, None)
        assert apply(cp, system, restore).returncode == 0
    # Allowed again: probed at once (its interval is an hour), and served.
    wait_for(
        "the provider to be ready",
        lambda: ready(status(cp, namespace, "llmp", "loop")).get("status") == "True",
    )
    answer = wait_for(
        "a completion",
        lambda: client.chat.completions.create(
            model="loop-chat", messages=[{"role": "user", "content": "allowed"}]
        ),
    )
    assert answer.choices[0].message.content == "Echo: allowed"


def test_bad_objects_are_rejected_by_the_api_server(
    control_plane: ControlPlane, system: str, namespace: str
) -> None:
    bad = apply(control_plane, namespace, provider("p", "http://x/v1", providerType="openai"))
    assert bad.returncode != 0
    assert "apiKeySecretRef is required when providerType is openai" in bad.stderr
    bad = apply(
        control_plane, namespace, model("m", "p", "x", contextWindow=100, maxOutputTokens=200)
    )
    assert "maxOutputTokens must not exceed contextWindow" in bad.stderr


def test_providers_created_and_probed_through_the_router(
    control_plane: ControlPlane,
    router: str,
    namespace: str,
    fakes: tuple[FakeOpenAI, FakeVLLM],
) -> None:
    cp = control_plane
    key = create_api_key(cp, namespace, "admin-key")
    auth = {"Authorization": f"Bearer {key}"}
    # The router's table must know the key before it accepts it.
    wait_for(
        "the key to be served",
        lambda: httpx.get(f"{router}/api/v1/llm/providers", headers=auth).status_code == 200,
    )
    new_provider = {
        "name": "via-api",
        "providerType": "openai",
        "baseUrl": fakes[0].url,
        "apiKey": OPENAI_KEY,
        "priority": 5,
    }
    # Not among the namespaces the router may change settings in: a 403 that says so.
    for path, body in (("", new_provider), ("/via-api/health-check", None)):
        r = httpx.post(f"{router}/api/v1/llm/providers{path}", headers=auth, json=body)
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "forbidden"
        assert f"may not change settings in namespace '{namespace}'" in error["message"]
        assert "router.settingsNamespaces" in error["message"]
    assert cp.kubectl("get", "-n", namespace, "llmp", "via-api", check=False).returncode != 0
    bind_settings(cp, namespace)

    def create() -> httpx.Response | None:
        answer = httpx.post(f"{router}/api/v1/llm/providers", headers=auth, json=new_provider)
        return None if answer.status_code == 403 else answer  # the binding not seen yet

    r = wait_for("the router's settings role to take effect", create)
    assert r.status_code == 201, r.text
    spec = kubectl_json(cp, "get", "-n", namespace, "llmp", "via-api")["spec"]
    assert spec["apiKeySecretRef"] == {"name": "via-api-api-key", "key": "apiKey"}
    secret = kubectl_json(cp, "get", "-n", namespace, "secret", "via-api-api-key")
    assert "apiKey" in secret["data"]
    # The API server's own validation speaks through the router.
    r = httpx.post(
        f"{router}/api/v1/llm/providers",
        headers=auth,
        json={"name": "no-url", "providerType": "vllm"},
    )
    assert r.status_code == 400
    assert "baseUrl is required" in r.json()["error"]["message"]
    assert (
        cp.kubectl("get", "-n", namespace, "secret", "no-url-api-key", check=False).returncode != 0
    )
    r = httpx.post(
        f"{router}/api/v1/llm/providers",
        headers=auth,
        json={"name": "via-api", "providerType": "vllm", "baseUrl": fakes[1].url},
    )
    assert r.status_code == 409
    # A health check asks the operator for a fresh probe and reports it.
    wait_for(
        "the provider in the table",
        lambda: (
            "via-api"
            in [
                p["name"]
                for p in httpx.get(f"{router}/api/v1/llm/providers", headers=auth).json()[
                    "providers"
                ]
            ]
        ),
    )
    before = time.time()
    r = httpx.post(f"{router}/api/v1/llm/providers/via-api/health-check", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == "healthy" and "gpt-4o-mini" in result["models"]
    from datetime import datetime

    checked = datetime.fromisoformat(result["checkedAt"].replace("Z", "+00:00")).timestamp()
    assert checked >= before - 0.001


def test_settings_reach_the_table(
    control_plane: ControlPlane, router: str, system: str, namespace: str
) -> None:
    cp = control_plane
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "switchyard-settings"},
        "data": {
            "settings.yaml": f"budgets:\n  - {{organization: {namespace}, dailyUsd: '3'}}\n"
            "cache: {ttlSeconds: 120}\n"
        },
    }
    assert apply(cp, system, settings).returncode == 0

    def table() -> str:
        return str(kubectl_json(cp, "get", "cm", "-n", system, "switchyard-routing")["data"])

    wait_for(
        "the budget in the table",
        lambda: f"organization: {namespace}" in table() and "ttlSeconds: 120" in table(),
    )
    settings["data"] = {"settings.yaml": "cache: {ttlSeconds: -5}\n"}
    assert apply(cp, system, settings).returncode == 0
    time.sleep(1.0)
    assert "ttlSeconds: 120" in table()  # a bad version is refused, the last good one stays
    events = cp.kubectl("get", "events", "-n", system, "-o", "json").stdout
    assert "InvalidSettings" in events
    cp.kubectl("delete", "cm", "-n", system, "switchyard-settings")
    wait_for("the settings to go", lambda: "ttlSeconds" not in table())


def test_an_operator_watching_named_namespaces_reads_nothing_elsewhere(
    control_plane: ControlPlane, tmp_path: Path, fakes: tuple[FakeOpenAI, FakeVLLM]
) -> None:
    """--watch-namespace, as the chart runs it with watchNamespaces: the operator's
    organizations role is bound in its namespaces only (no ClusterRoleBinding), and it
    compiles what is there, ignores the rest, and asks for nothing it may not have."""
    cp = control_plane
    tag = os.urandom(3).hex()
    home, watched, other = (f"{n}-{tag}" for n in ("scoped-sy", "scoped-in", "scoped-out"))
    for ns in (home, watched, other):
        cp.kubectl("create", "namespace", ns)
    cp.kubectl("apply", "-n", home, "-f", str(RBAC / "rbac-operator.yaml"))
    who = "--user=switchyard-operator-scoped"
    cp.kubectl("create", "rolebinding", "op", "-n", home, "--role=switchyard-operator", who)
    for ns in (home, watched):
        cp.kubectl(
            "create", "rolebinding", "op-org", "-n", ns,
            "--clusterrole=switchyard-operator-organizations", who,
        )  # fmt: skip

    def can_i(*args: str) -> str:
        out = cp.kubectl("auth", "can-i", *args, "--as=switchyard-operator-scoped", check=False)
        return out.stdout.strip()

    assert can_i("list", "secrets", "--all-namespaces") == "no"
    assert can_i("list", "secrets", "-n", other) == "no"
    assert can_i("list", "secrets", "-n", watched) == "yes"
    for ns in (watched, other):
        assert apply(cp, ns, provider("local", fakes[1].url, providerType="vllm")).returncode == 0
        assert apply(cp, ns, model(f"model-{ns}", "local", "m")).returncode == 0
    config = cp.write_kubeconfig(tmp_path / "kubeconfig", user(cp, "switchyard-operator-scoped"))
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "switchyard.cli", "operator", "--namespace", home,
                "--watch-namespace", home, "--watch-namespace", watched,
                "--kubeconfig", str(config), "--health-port", "0",
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def table() -> str:
            return str(kubectl_json(cp, "get", "cm", "-n", home, "switchyard-routing")["data"])

        wait_for(
            "the watched namespace's model in the table", lambda: f"model-{watched}" in table()
        )
        assert f"model-{other}" not in table() and other not in table()
        time.sleep(2)  # a probe, its status and event: every write it makes, allowed
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    for refused in ("Forbidden", "forbidden", "Traceback"):
        assert refused not in text, text[-4000:]
    # A 403 anywhere, but not a log line's milliseconds (",403"), which once matched.
    assert not re.search(r"(?<![,\d])403(?!\d)", text), text[-4000:]


def endpoint_slice(name: str, service: str, port: int, ready: dict[str, bool]) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes one for a Service."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "switchyard-tests",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ok}} for ip, ok in ready.items()],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def host_address() -> str:
    """This machine's own address on its network: an EndpointSlice may not hold a
    loopback one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.254.254.254", 1))  # no packet is sent; the route picks the address
        return str(s.getsockname()[0])


def test_a_service_ref_follows_the_services_ready_pods(
    control_plane: ControlPlane, router: str, namespace: str
) -> None:
    """The operator follows a Service's EndpointSlices into the table; the router
    spreads calls over the ready pods and follows them as they come and go. The three
    pods are fake vLLM servers on this machine's address, each on a port of its own
    (as a named targetPort may be), so each has a slice of its own."""
    from tests.fakes.model_server import FakeModelServer

    cp = control_plane
    ip = host_address()
    replicas = []
    for _ in range(3):
        server = FakeModelServer(slots=2)
        server.host = ip
        replicas.append(server.start())
    a, b, c = (f"{ip}:{r.port}" for r in replicas)

    def slice_of(i: int, ready: bool) -> dict[str, Any]:
        return endpoint_slice(f"pool-{i}", "pool", replicas[i].port, {ip: ready})

    try:
        key = create_api_key(cp, namespace, "pool-key")
        auth = {"Authorization": f"Bearer {key}"}
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "pool"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }
        objects = [service, slice_of(0, True), slice_of(1, True), slice_of(2, False)]
        assert apply(cp, namespace, *objects).returncode == 0
        spec = {"providerType": "vllm", "serviceRef": {"name": "pool", "port": "http"}}
        assert (
            apply(
                cp,
                namespace,
                provider("pool", f"http://pool.{namespace}.svc:80/v1", **spec),
                model("pool-llama", "pool", FakeModelServer.default_models[0], name="llama"),
            ).returncode
            == 0
        )

        def endpoints() -> set[str]:
            r = httpx.get(f"{router}/api/v1/llm/providers", headers=auth)
            if r.status_code != 200:
                return set()
            pool = [p for p in r.json()["providers"] if p["name"] == "pool"]
            return {e["address"] for e in pool[0]["endpoints"]} if pool else set()

        wait_for("the Service's ready pods in the table", lambda: endpoints() == {a, b})
        # Probed at its baseUrl, the Service's own address, which does not resolve here:
        # what matters is that the probe ran on a spec with a serviceRef.
        probed = wait_for(
            "the provider probed",
            lambda: ready(status(cp, namespace, "llmprovider", "pool")).get("reason"),
        )
        assert probed != "InvalidSpec", status(cp, namespace, "llmprovider", "pool")
        client = openai.OpenAI(base_url=f"{router}/v1", api_key=key, max_retries=0)
        # Each prompt is a conversation of its own, placed on the ring by its hash: 24 of
        # them leave a replica without one only once in millions of runs (8 did once).
        for i in range(24):
            answer = client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4
            )
            assert answer.choices[0].message.content
        served = [r.served for r in replicas]
        assert served[0] > 0 and served[1] > 0 and served[2] == 0, served

        # One pod becomes ready, another goes: the table follows.
        started = time.monotonic()
        assert apply(cp, namespace, slice_of(2, True)).returncode == 0
        cp.kubectl("delete", "-n", namespace, "endpointslice", "pool-0")
        wait_for("the table to follow the pods", lambda: endpoints() == {b, c}, every=0.02)
        print(f"endpoints followed in {time.monotonic() - started:.2f}s", file=sys.__stderr__)
        before = [r.served for r in replicas]
        for i in range(24):
            client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": f"r{i}"}], max_tokens=4
            )
        after = [r.served for r in replicas]
        assert after[0] == before[0] and after[2] > before[2], (before, after)

        # No ready pod at all: the Service's own address again, and a warning says why.
        cp.kubectl("delete", "-n", namespace, "endpointslice", "pool-1", "pool-2")
        wait_for("the endpoints to go", lambda: endpoints() == set())
        events = wait_for(
            "a warning on the provider",
            lambda: [
                e
                for e in kubectl_json(cp, "get", "-n", namespace, "events")["items"]
                if e.get("reason") == "Endpoints"
            ],
        )
        assert "Service pool has no ready endpoints" in events[0]["message"]
    finally:
        for server in replicas:
            server.stop()


def test_service_refs_and_endpoints_are_for_in_cluster_types(
    control_plane: ControlPlane, system: str, namespace: str
) -> None:
    cp = control_plane
    bad = apply(
        cp,
        namespace,
        provider(
            "p",
            "http://x/v1",
            providerType="openai",
            apiKeySecretRef={"name": "k"},
            serviceRef={"name": "pool"},
        ),
    )
    assert bad.returncode != 0
    assert "serviceRef and endpoints are for in-cluster model servers" in bad.stderr
    bad = apply(
        cp,
        namespace,
        provider(
            "p",
            "http://x/v1",
            providerType="vllm",
            serviceRef={"name": "pool"},
            endpoints=["10.0.0.1:8000"],
        ),
    )
    assert "give serviceRef or endpoints, not both" in bad.stderr
    bad = apply(
        cp, namespace, provider("p", "http://x/v1", providerType="vllm", endpoints=["10.0.0.1"])
    )
    assert bad.returncode != 0 and "endpoints" in bad.stderr
    bad = apply(
        cp,
        namespace,
        provider("p", "http://x/v1", providerType="vllm", serviceRef={"name": "p", "port": 0}),
    )
    assert bad.returncode != 0 and "serviceRef.port" in bad.stderr
