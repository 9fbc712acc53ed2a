"""What the node tests and the cluster benchmark do with a release: its values, helm,
kubectl, API keys made as NOTES.txt says, and waiting for things to be so."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.node.cluster import STORAGE_CLASS, NodeCluster
from tests.node.images import Image

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "switchyard"
FAKE_UPSTREAM = ROOT / "tests" / "bench" / "fake_upstream.py"
NS = "switchyard"
RELEASE = "switchyard"
FULL = RELEASE  # the release's name holds the chart's: its objects are switchyard-*


def image_values(image: Image) -> dict[str, str]:
    return {
        "registry": "localhost",
        "repository": image.repository.removeprefix("localhost/"),
        "tag": image.tag,
        "pullPolicy": "Never",
    }


def chart_values(images: dict[str, Image]) -> dict[str, Any]:
    """The chart's defaults, with the images built here and a node's modest sizes."""
    small = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}
    return {
        "router": {"image": image_values(images["router"]), "replicas": 2, "resources": small},
        "operator": {"image": image_values(images["operator"]), "resources": small},
        "postgresql": {
            "image": image_values(images["postgres"]),
            "persistence": {"storageClass": STORAGE_CLASS, "size": "1Gi"},
            "resources": small,
        },
        # The router's two replicas share rate budgets, spending and breakers on it.
        "redis": {"enabled": True, "image": image_values(images["redis"]), "resources": small},
        "ollama": {
            "enabled": True,
            "image": image_values(images["ollama"]),
            "models": [
                {
                    "name": "smollm2",
                    "gguf": "/opt/models/smollm2.gguf",
                    "contextWindow": 2048,
                    "maxOutputTokens": 256,
                }
            ],
            "parallel": 1,
            "persistence": {"storageClass": STORAGE_CLASS, "size": "1Gi"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {}},
        },
        # The OpenAI-compatible server: llama.cpp's (the local-model image) for vLLM.
        "vllm": {
            "enabled": True,
            "image": image_values(images["local-model"]),
            "command": ["switchyard"],
            "args": ["local-model", "--host", "0.0.0.0", "--port", "8000", "--threads", "1"],
            "servedModelName": "smollm2-135m",
            # Two pods: the routers spread calls over them (serviceRef).
            "replicas": 2,
            "llmModel": {"name": "smollm2-llamacpp", "contextWindow": 2048, "maxOutputTokens": 256},
            "gpu": {"enabled": False},
            "persistence": {"enabled": False},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {}},
        },
    }


@dataclass
class Release:
    cluster: NodeCluster
    values: Path
    url: str  # the router's Service, from this machine
    install_seconds: float

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return helm(self.cluster, *args, timeout=timeout)


def helm(
    cluster: NodeCluster, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, HELM_CACHE_HOME="/tmp/helm-cache", HELM_CONFIG_HOME="/tmp/helm"),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}\n{cluster.diagnose()}"
        )
    return proc


def kubectl_json(cluster: NodeCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def wait_for(what: str, check: Any, seconds: float = 180, every: float = 0.5) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the thing may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"waited {seconds:g}s for {what}; last: {last!r}")


def api_key(cluster: NodeCluster, namespace: str, name: str, scopes: str) -> str:
    """An API key, made the way NOTES.txt tells users to."""
    key = f"sy-{secrets.token_urlsafe(24)}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", name,
        f"--from-literal=sha256={digest}", f"--from-literal=scopes={scopes}",
    )  # fmt: skip
    cluster.kubectl("-n", namespace, "label", "secret", name, "switchyard.dev/api-key=true")
    return key


def ready_pods(cluster: NodeCluster, namespace: str, component: str) -> list[str]:
    pods = kubectl_json(
        cluster, "-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/component={component}"
    )["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def serves(key: str, url: str, model: str) -> bool:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=30,
    )
    return r.status_code == 200


def deploy_fast_model(cluster: NodeCluster, namespace: str, model: str = "fast") -> None:
    """A fast fake OpenAI server in ``namespace`` (the benchmarks' fake upstream, run by
    the router image's Python) and an LLMProvider and LLMModel for it: load on the
    routers, not on a model."""
    cluster.kubectl(
        "-n", namespace, "create", "configmap", "fake-upstream",
        f"--from-literal=fake_upstream.py={FAKE_UPSTREAM.read_text()}",
    )  # fmt: skip
    image = cluster.images["router"].ref
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: fake-upstream, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: fake-upstream}}}}
  template:
    metadata: {{labels: {{app: fake-upstream}}}}
    spec:
      containers:
        - name: fake
          image: {image}
          imagePullPolicy: Never
          command: [/opt/switchyard/bin/python, /fake/fake_upstream.py]
          env: [{{name: FAKE_HOST, value: 0.0.0.0}}, {{name: FAKE_PORT, value: "8001"}}]
          readinessProbe: {{httpGet: {{path: /health, port: 8001}}, periodSeconds: 1}}
          volumeMounts: [{{name: fake, mountPath: /fake}}]
      volumes: [{{name: fake, configMap: {{name: fake-upstream}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: fake-upstream, namespace: {namespace}}}
spec:
  selector: {{app: fake-upstream}}
  ports: [{{port: 8001}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMProvider
metadata: {{name: {model}, namespace: {namespace}}}
spec: {{providerType: vllm, baseUrl: "http://fake-upstream.{namespace}.svc:8001/v1"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMModel
metadata: {{name: {model}, namespace: {namespace}}}
spec:
  providerRef: {{name: {model}}}
  modelName: bench
  contextWindow: 8192
  maxOutputTokens: 1024
"""
    cluster.kubectl("apply", "-f", "-", input=manifest)
    cluster.kubectl(
        "-n", namespace, "rollout", "status", "deployment/fake-upstream", "--timeout=120s",
        timeout=130,
    )  # fmt: skip
