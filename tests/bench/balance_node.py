"""``./dev bench balance --node N``: the comparison on a real node (``tests/node``), with
the chart installed as a platform team would and its in-cluster llama.cpp server (the
chart's ``vllm`` server, the ``local-model`` image, one thread and two slots per pod) at
N replicas.

Picking is the chart's own provider, ``<release>-vllm``: its ``serviceRef`` names the
Service, the operator follows its EndpointSlices and both routers call the pods. The
baseline is a second provider, applied here, whose ``baseUrl`` is the same Service's
address and nothing else (kube-proxy spreads the connections), with a model serving the
same ``servedModelName``. Each mode restarts the pods first (``kubectl rollout
restart``) so that both begin cold, waits until every router calls the new pods, and
reads each pod's ``/metrics`` (pod addresses are reachable from this machine) before and
after. llama.cpp counts no requests, so the requests each pod served are the tasks its
log shows it launching (``launch_slot_``).

The node is started and torn down here. Another node on the machine would fight this one
for its network and its processes: the run holds ``/tmp/switchyard-node.lock``, as the
node tests do when started under ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.bench import balance_workload
from tests.bench.balance_bench import Counts, ModeResult, llamacpp_counters
from tests.kube.controlplane import ensure_binaries
from tests.node.cluster import NodeCluster, requirements
from tests.node.images import Images
from tests.node.release import (
    CHART,
    FULL,
    NS,
    RELEASE,
    api_key,
    chart_values,
    helm,
    kubectl_json,
    serves,
    wait_for,
)

LOCK = Path("/tmp/switchyard-node.lock")
DEPLOYMENT = f"{FULL}-vllm"
PICKING_PROVIDER = f"{FULL}-vllm"  # the chart's, with serviceRef
PICKING_MODEL = "smollm2-llamacpp"  # the chart's vllm.llmModel.name
BASELINE = "smollm2-service"  # provider and model applied here: the Service's address
SERVED = "smollm2-135m"  # the chart's vllm.servedModelName
PORT = 8000
#: Every line llama.cpp's server logs when a slot takes a completion request.
LAUNCH = "launch_slot_"


@contextlib.contextmanager
def node_lock() -> Iterator[None]:
    with LOCK.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK}: another node is running on this machine", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _metrics(ip: str) -> dict[str, float]:
    return llamacpp_counters(httpx.get(f"http://{ip}:{PORT}/metrics", timeout=10).text)


@dataclass
class Pod:
    name: str
    ip: str
    metrics: dict[str, float] = field(default_factory=dict)  # at the mode's start
    launched: int = 0  # tasks in its log at the mode's start
    last: dict[str, float] | None = None  # read just before it was deleted
    last_launched: int = 0
    note: str = ""


class Node:
    def __init__(
        self, cluster: NodeCluster, url: str, key: str, replicas: int, parallel: int
    ) -> None:
        self.cluster, self.url, self.key, self.replicas = cluster, url, key, replicas
        self.parallel = parallel

    def pods(self, component: str = "vllm") -> dict[str, str]:
        """The component's ready pods (none being deleted): name -> address."""
        items = kubectl_json(
            self.cluster, "-n", NS, "get", "pods", "-l", f"app.kubernetes.io/component={component}"
        )["items"]
        return {
            p["metadata"]["name"]: p["status"]["podIP"]
            for p in items
            if p["metadata"].get("deletionTimestamp") is None
            and p["status"].get("podIP")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        }

    def launched(self, pod: str) -> int:
        out = self.cluster.kubectl("-n", NS, "logs", pod, "-c", "server", timeout=30)
        return out.stdout.count(LAUNCH)

    def endpoints(self) -> list[dict[str, dict[str, Any]]]:
        """Each router's view of the picking provider's endpoints, by address."""
        views = []
        for ip in self.pods("router").values():
            r = httpx.get(
                f"http://{ip}:8080/api/v1/llm/providers",
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=10,
            )
            r.raise_for_status()
            (p,) = [p for p in r.json()["providers"] if p["name"] == PICKING_PROVIDER]
            views.append({e["address"]: e for e in p.get("endpoints") or []})
        return views

    def restart(self) -> dict[str, str]:
        """New vLLM pods, cold, and every router calling them."""
        old = set(self.pods())
        self.cluster.kubectl("-n", NS, "rollout", "restart", f"deployment/{DEPLOYMENT}")
        self.cluster.kubectl(
            "-n", NS, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=300s",
            timeout=310,
        )  # fmt: skip
        pods: dict[str, str] = wait_for(
            f"{self.replicas} new vLLM pods",
            lambda: (p := self.pods()) and len(p) == self.replicas and not (set(p) & old) and p,
            seconds=300,
        )
        want = {f"{ip}:{PORT}" for ip in pods.values()}
        wait_for(
            "every router to call the new pods",
            lambda: all(set(v) == want for v in self.endpoints()),
            seconds=120,
        )
        return pods

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.key, max_retries=0, timeout=300
        )


def _baseline_manifest() -> str:
    return f"""
apiVersion: switchyard.dev/v1alpha1
kind: LLMProvider
metadata: {{name: {BASELINE}, namespace: {NS}}}
spec:
  providerType: vllm
  baseUrl: "http://{DEPLOYMENT}.{NS}.svc:{PORT}/v1"
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMModel
metadata: {{name: {BASELINE}, namespace: {NS}}}
spec:
  providerRef: {{name: {BASELINE}}}
  modelName: {SERVED}
  contextWindow: 2048
  maxOutputTokens: 256
"""


def _merge(views: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The routers' endpoint views added up per address."""
    merged: dict[str, dict[str, Any]] = {}
    for view in views:
        for address, e in view.items():
            m = merged.setdefault(
                address,
                {"address": address, "state": e["state"], "picks": 0, "affinityHits": 0,
                 "consecutiveFailures": 0},
            )  # fmt: skip
            m["picks"] += e.get("picks", 0)
            m["affinityHits"] += e.get("affinityHits", 0)
            m["consecutiveFailures"] = max(m["consecutiveFailures"], e["consecutiveFailures"])
            if e["state"] != m["state"]:
                m["state"] = f"{m['state']}/{e['state']}"
    return list(merged.values())


def run_mode(
    node: Node,
    name: str,
    model: str,
    workload: dict[str, Any],
    kill_after: float | None,
) -> tuple[ModeResult, list[Pod]]:
    started = time.monotonic()
    fresh = node.restart()
    # One call end to end (a short prompt sharing nothing with the workload's), before
    # the counters are read: the path works.
    wait_for(f"{model} to serve", lambda: serves(node.key, node.url, model), seconds=120)
    print(f"{name}: pods restarted and serving in {time.monotonic() - started:.0f} s", flush=True)
    system = balance_workload.system_prompt(workload["system_words"])
    roots = [f"http://{ip}:8000" for ip in fresh.values()]
    balance_workload.warm_slots(roots, node.parallel, system)
    pods = {n: Pod(n, ip, _metrics(ip), node.launched(n)) for n, ip in sorted(fresh.items())}
    killed: list[float] = []
    begun = time.perf_counter()

    def kill() -> None:
        # On a timer of its own: the workload's hook runs between one-offs, which a
        # loaded node makes seconds apart.
        victim = list(pods.values())[1]
        with contextlib.suppress(Exception):
            victim.last = _metrics(victim.ip)
            victim.last_launched = node.launched(victim.name)
        victim.note = "deleted"
        killed.append(time.perf_counter() - begun)
        node.cluster.kubectl("-n", NS, "delete", "pod", victim.name, "--wait=false")

    timer = threading.Timer(kill_after, kill) if kill_after is not None else None
    if timer is not None:
        timer.start()
    try:
        results = balance_workload.run(node.client, model, **workload)
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
    endpoints = _merge(node.endpoints())
    counts: list[Counts] = []
    now = node.pods()
    for n, ip in sorted(now.items()):
        if n not in pods:
            pods[n] = Pod(n, ip, note="replacement")
    for pod in pods.values():
        if pod.last is None:
            try:
                after, launched = _metrics(pod.ip), node.launched(pod.name)
            except Exception:  # deleted and gone before it could be read
                after, launched = dict(pod.metrics), pod.launched
        else:
            after, launched = pod.last, pod.last_launched

        def rise(metric: str, pod: Pod = pod, after: dict[str, float] = after) -> int:
            return int(after.get(metric, 0) - pod.metrics.get(metric, 0))

        counts.append(
            Counts(
                rise("llamacpp:prompt_tokens_total"),
                rise("llamacpp:prompt_tokens_cached_total"),
                launched - pod.launched,
            )
        )
    mode = ModeResult(name, results, counts, endpoints, killed[0] if killed else None)
    return mode, list(pods.values())


def run(
    replicas: int, workload: dict[str, Any], kill_after: float | None, parallel: int = 2
) -> tuple[ModeResult, ModeResult]:
    """Start a node, install the chart, run both modes, tear the node down.
    ``parallel``: llama.cpp's slots per pod, each keeping one prompt."""
    missing = requirements()
    if missing:
        raise SystemExit(f"bench: a node needs {', '.join(missing)}")
    with node_lock():
        bin_dir = ensure_binaries(node=True)
        images = Images()
        try:
            built = images.all()
        finally:
            images.close()
        cluster = NodeCluster(bin_dir, built)
        t = time.monotonic()
        cluster.start()
        try:
            print(f"node started in {time.monotonic() - t:.0f} s", flush=True)
            values = chart_values(built)
            values["vllm"]["replicas"] = replicas
            values["vllm"]["args"] = [*values["vllm"]["args"], "--parallel", str(parallel)]
            path = Path(tempfile.mkdtemp(prefix="switchyard-balance-node-")) / "values.json"
            path.write_text(json.dumps(values))
            t = time.monotonic()
            helm(cluster, "install", RELEASE, str(CHART), "--namespace", NS,
                 "--create-namespace", "-f", str(path), "--wait", "--timeout=10m",
                 timeout=700)  # fmt: skip
            url = f"http://{cluster.service_ip(NS, f'{FULL}-router')}:80"
            key = api_key(cluster, NS, "bench", "completion")
            cluster.kubectl("apply", "-f", "-", input=_baseline_manifest())
            node = Node(cluster, url, key, replicas, parallel)
            for model in (PICKING_MODEL, BASELINE):
                wait_for(f"{model} to serve", lambda m=model: serves(key, url, m), seconds=300)
            print(f"chart installed and serving in {time.monotonic() - t:.0f} s", flush=True)
            base, base_pods = run_mode(node, "baseline (Service)", BASELINE, workload, kill_after)
            print(f"baseline done in {base.results.elapsed:.1f} s", flush=True)
            pick, pick_pods = run_mode(
                node, "picking (endpoints)", PICKING_MODEL, workload, kill_after
            )
            print(f"picking done in {pick.results.elapsed:.1f} s", flush=True)
        finally:
            undone = cluster.stop()
            left = cluster.before.differences() if cluster.before else []
            print(
                f"node stopped; put back: {'; '.join(undone) or 'nothing'}; machine "
                + ("as it was" if not left else f"NOT as it was: {'; '.join(left)}"),
                flush=True,
            )
    for mode, pods in ((base, base_pods), (pick, pick_pods)):
        print(f"\n{mode.name}: per pod")
        for pod, c in zip(pods, mode.counts, strict=True):
            print(
                f"  {pod.name:<36} {pod.ip:<14} requests {c.requests:>3}  computed "
                f"{c.computed:>6}  cached {c.cached:>6}  {pod.note}"
            )
    return base, pick
