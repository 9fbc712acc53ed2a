"""Switchyard installed on a real node, timed: what a platform team waits for.

    ./dev bench cluster [--applies 20] [--rate 25]

Prints: the images (how long building took, when anything was missing, and their
sizes); the node's start with a new containerd (images imported) and again with the
images already in it; ``helm install`` until the router's Service answers; ``kubectl
apply`` of a provider until it is served (p50/p95); requests that failed during a
rolling ``helm upgrade`` at a steady rate; the node's memory. Needs root, like the
node tests (tests/node).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.kube.controlplane import ensure_binaries  # noqa: E402
from tests.node.cluster import NodeCluster, requirements  # noqa: E402
from tests.node.images import Images  # noqa: E402
from tests.node.load import SteadyLoad  # noqa: E402
from tests.node.release import (  # noqa: E402
    CHART,
    FULL,
    NS,
    RELEASE,
    api_key,
    chart_values,
    deploy_fast_model,
    helm,
    serves,
    wait_for,
)

NODE_PROCESSES = (
    "etcd",
    "kube-apiserver",
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
    "containerd",
)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def node_memory(cluster: NodeCluster) -> tuple[float, float]:
    """RSS of the node's own processes, and the memory its pods' cgroups use, in MiB."""
    procs = {**cluster._procs, **cluster.cp._procs}
    own = sum(rss_mib(p.pid) for name, p in procs.items() if name in NODE_PROCESSES)
    usage = Path("/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes")
    pods = int(usage.read_text()) / 2**20 if usage.exists() else 0.0
    return own, pods


def _steps(cluster: NodeCluster) -> str:
    s = cluster.seconds
    slow = ", ".join(f"{k} {v:.1f}" for k, v in s.items() if k != "total" and v >= 1)
    return f"{s['total']:.1f} s ({slow})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s during the upgrade")
    args = parser.parse_args()
    missing = requirements()
    if missing:
        print(f"bench: a node needs {', '.join(missing)}", file=sys.stderr)
        return 2
    bin_dir = ensure_binaries(node=True)

    t = time.monotonic()
    images = Images()
    try:
        built = images.all()
    finally:
        images.close()
    build_s = time.monotonic() - t
    rows: list[tuple[str, str]] = [
        ("images", f"{len(images.built)} built in {build_s:.0f} s (the rest from the cache)")
    ]
    for role, image in built.items():
        rows.append((f"  {role}", f"{image.archive.stat().st_size / 2**20:.0f} MiB"))

    keep = Path(tempfile.mkdtemp(prefix="switchyard-bench-containerd-"))
    try:
        cluster = NodeCluster(bin_dir, built, containerd_root=keep)
        cluster.start()
        try:
            rows.append(("node start, images imported", _steps(cluster)))
            values = Path(tempfile.mkdtemp()) / "values.json"
            values.write_text(json.dumps(chart_values(built)))
            t = time.monotonic()
            helm(cluster, "install", RELEASE, str(CHART), "--namespace", NS,
                 "--create-namespace", "-f", str(values), "--wait", "--timeout=10m",
                 timeout=700)  # fmt: skip
            url = f"http://{cluster.service_ip(NS, f'{FULL}-router')}:80"
            key = api_key(cluster, NS, "bench", "completion")
            wait_for(
                "the router to serve",
                lambda: serves(key, url, "smollm2-llamacpp"),
                seconds=300,
                every=0.1,
            )
            rows.append(("helm install -> router serving", f"{time.monotonic() - t:.1f} s"))

            deploy_fast_model(cluster, NS, "fast")
            wait_for("the fast model", lambda: serves(key, url, "fast"), seconds=120, every=0.1)
            served: list[float] = []
            for i in range(args.applies):
                manifest = f"""
apiVersion: switchyard.dev/v1alpha1
kind: LLMProvider
metadata: {{name: bench-{i}, namespace: {NS}}}
spec: {{providerType: vllm, baseUrl: "http://fake-upstream.{NS}.svc:8001/v1"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: LLMModel
metadata: {{name: bench-{i}, namespace: {NS}}}
spec: {{providerRef: {{name: bench-{i}}}, modelName: bench, contextWindow: 8192,
        maxOutputTokens: 1024}}
"""
                t = time.monotonic()
                cluster.kubectl("apply", "-f", "-", input=manifest)
                wait_for("served", lambda i=i: serves(key, url, f"bench-{i}"), every=0.05)
                served.append(time.monotonic() - t)
            p50 = statistics.median(served)
            p95 = sorted(served)[max(0, round(0.95 * len(served)) - 1)]
            rows.append(
                (f"kubectl apply -> served ({args.applies})", f"p50 {p50:.2f} s, p95 {p95:.2f} s")
            )

            with SteadyLoad(url, key, "fast", rate=args.rate) as load:
                time.sleep(3)
                helm(cluster, "upgrade", RELEASE, str(CHART), "--namespace", NS, "-f",
                     str(values), "--set", "router.logLevel=warning", "--wait",
                     "--timeout=5m")  # fmt: skip
                time.sleep(3)
            result = load.stop()
            rows.append(
                (f"rolling upgrade at {args.rate:g} req/s", f"{result.failed} failed of "
                 f"{result.sent} ({result.retried} tried again)")
            )  # fmt: skip
            own, pods = node_memory(cluster)
            rows.append(("node memory", f"{own:.0f} MiB node processes + {pods:.0f} MiB pods"))
        finally:
            cluster.stop()
        again = NodeCluster(bin_dir, built, containerd_root=keep)
        again.start()
        try:
            rows.append(("node start, images already in containerd", _steps(again)))
        finally:
            again.stop()
        left = again.before.differences() if again.before else []
        rows.append(("machine after the runs", "as it was" if not left else "; ".join(left)))
    finally:
        shutil.rmtree(keep, ignore_errors=True)

    print()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
