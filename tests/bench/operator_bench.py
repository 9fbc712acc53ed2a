"""Operator benchmark: from ``kubectl apply`` to a served model, and the control plane at scale.

    python tests/bench/operator_bench.py [--providers 1000] [--models 10000]
        [--namespaces 20] [--applies 20] [--no-cluster] [--quick]

1. Latency: a real etcd + kube-apiserver (tests/kube), the operator as a process
   and the router as a process following the routing ConfigMap through the API
   (``--routing-configmap``). Each of ``--applies`` runs applies one new LLMModel
   on an existing provider (a FakeVLLM) with kubectl and times it until the
   router lists the model in ``GET /v1/models``; the ConfigMap's checksum
   annotation, watched meanwhile, splits that into apply -> ConfigMap written and
   ConfigMap -> router serving.
2. Scale, ``--providers`` vllm providers and ``--models`` models spread over
   ``--namespaces`` namespaces. The providers point at a dead loopback URL with
   ``healthCheck.enabled: false``, so the prober sends nothing.
   a. ``compile_state`` + ``validate`` in-process on a synthetic ClusterState;
   b. the table's size as YAML, as canonical JSON and gzipped, and the
      ConfigMaps ``bundle.pack`` makes of it;
   c. the router's reload, in-process (``read_path`` + ``Gateway.install``), and
      a router process started on the packed table (start to ready, RSS);
   d. the same objects created in the API server, then a fresh operator process:
      time from its start to the first ConfigMap holding every model, its RSS
      then, and the router (still following the ConfigMap) catching up.

Numbers are printed beside the targets; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import yaml  # noqa: E402

from switchyard.router.table import bundle  # noqa: E402
from tests.bench.run_bench import admin_port  # noqa: E402

GROUP_VERSION = "switchyard.dev/v1alpha1"
CHECKSUM_ANNOTATION = "switchyard.dev/checksum"
API_KEY_LABEL = "switchyard.dev/api-key"
CONFIGMAP = "switchyard-routing"
KEYS_SECRET = "switchyard-provider-keys"
DEAD_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens
CRDS = ROOT / "crds"
RBAC = ROOT / "helm" / "switchyard" / "files"
CLK = os.sysconf("SC_CLK_TCK")
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- small helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(samples)
    if not s:
        return float("nan")
    rank = max(1, min(len(s), int(-(-q * len(s) // 100))))
    return s[rank - 1]


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # not answerable yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http_json(url: str, key: str | None = None, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return orjson.loads(resp.read())


def served_models(router: str, key: str) -> set[str]:
    return {m["id"] for m in http_json(f"{router}/v1/models", key)["data"]}


def is_served(router: str, key: str, model: str) -> bool:
    return model in served_models(router, key)


def router_table_models(router: str) -> int:
    """Models in the router's current table (its switchyard_table_models gauge)."""
    port = int(router.rsplit(":", 1)[1])
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port(port)}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("switchyard_table_models "):
                return int(float(line.split()[1]))
    return -1


def api_key_for(ns: str) -> str:
    return f"sy-bench-{ns}"


def step(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the objects --------------------------------------------------------------------------
# Every field the CRDs default is written out, so that the in-process state and
# what the API server stores compile to the same table.


def provider_obj(ns: str, name: str, url: str, health_check: bool, priority: int) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LLMProvider",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "providerType": "vllm",
            "baseUrl": url,
            "priority": priority,
            "isDefault": False,
            "isEnabled": True,
            "healthCheck": {"enabled": health_check, "intervalSeconds": 30},
        },
    }


TASKS = ("chat", "code_analysis", "summarize", "translate", "documentation", "test_generation")


def model_obj(ns: str, obj_name: str, provider: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LLMModel",
        "metadata": {"name": obj_name, "namespace": ns},
        "spec": {
            "providerRef": {"name": provider},
            "name": obj_name,
            "modelName": f"bench/{obj_name}-instruct",
            "displayName": f"Bench model {i}",
            "contextWindow": (4096, 8192, 32000, 128000)[i % 4],
            "maxOutputTokens": 4096,
            "supportsFunctionCalling": i % 2 == 0,
            "supportsStreaming": True,
            "inputPricePer1MTokens": f"0.{i % 97:02d}",
            "outputPricePer1MTokens": f"1.{i % 89:02d}",
            "avgLatencyMs": 100 + i % 900,
            "bestFor": [TASKS[i % 6], TASKS[(i + 1) % 6]],
            "isEnabled": True,
        },
    }


def api_key_secret(ns: str, name: str = "bench-key") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "labels": {API_KEY_LABEL: "true"}},
        "stringData": {
            "sha256": hashlib.sha256(api_key_for(ns).encode()).hexdigest(),
            "scopes": "completion",
        },
    }


@dataclass
class Fleet:
    """``providers`` providers and ``models`` models over ``namespaces`` namespaces."""

    providers: int
    models: int
    namespaces: int
    prefix: str = "scale"

    def ns(self, i: int) -> str:
        return f"{self.prefix}-{i:02d}"

    def provider_objs(self) -> list[dict[str, Any]]:
        return [
            provider_obj(self.ns(i % self.namespaces), f"p-{i:05d}", DEAD_URL, False, 1 + i % 100)
            for i in range(self.providers)
        ]

    def model_objs(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.models):
            p = i % self.providers  # spread evenly; a model lives with its provider
            out.append(model_obj(self.ns(p % self.namespaces), f"m-{i:06d}", f"p-{p:05d}", i))
        return out

    def models_in(self, ns_index: int) -> int:
        ns = self.ns(ns_index)
        return sum(1 for m in self.model_objs() if m["metadata"]["namespace"] == ns)


# -- part 1: in-process compile, pack and reload -------------------------------------------


@dataclass
class Row:
    label: str
    value: str
    target: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, value: str, target: str = "") -> None:
        self.rows.append(Row(label, value, target))
        print(f"    {label:<64} {value}", flush=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def write_packed(packed: bundle.Packed, directory: Path) -> None:
    """The packed table as a mounted ConfigMap (a projected volume, for parts) shows it."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, v in packed.data.items():
        (directory / k).write_text(v)
    for k, b in packed.binary.items():
        (directory / k).write_bytes(b)
    for files in packed.parts.values():
        for k, b in files.items():
            (directory / k).write_bytes(b)


def in_process(fleet: Fleet, work: Path, res: Results) -> Path:
    from switchyard.operator.compiler import compile_state, validate
    from switchyard.operator.state import ClusterState
    from switchyard.router.core.gateway import Gateway
    from switchyard.router.metrics import Metrics
    from switchyard.router.table.loader import parse_document
    from switchyard.router.table.source import read_path

    step(f"in-process: {fleet.providers} providers, {fleet.models} models, {fleet.namespaces} ns")
    state = ClusterState()
    for p in fleet.provider_objs():
        state.record("llmproviders", "ADDED", p)
    for m in fleet.model_objs():
        state.record("llmmodels", "ADDED", m)
    for i in range(fleet.namespaces):
        s = api_key_secret(fleet.ns(i))
        state.api_keys[(fleet.ns(i), "bench-key")] = dict(s["stringData"])

    compiled, t_compile = timed(lambda: compile_state(state))
    problem, t_validate = timed(lambda: validate(compiled.document))
    doc = compiled.document
    assert problem is None, problem
    assert len(doc["models"]) == fleet.models, len(doc["models"])
    res.add("(a) compile_state", f"{t_compile:.2f} s")
    res.add("(a) validate (the router's parse_document)", f"{t_validate:.2f} s")
    res.add(
        "(a) compile_state + validate",
        f"{t_compile + t_validate:.2f} s",
        "-",
    )

    # What the publisher does on every compile (YAML only when small enough to keep).
    text, t_dump = timed(lambda: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    packed, t_pack = timed(
        lambda: bundle.pack(
            doc,
            lambda i: f"{CONFIGMAP}-part-{i}",
            lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True),
        )
    )
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    gz = gzip.compress(canonical, compresslevel=6, mtime=0)
    if packed.parts:
        form = f"gzip JSON in {len(packed.parts)} part ConfigMap(s) + index"
    elif packed.binary:
        form = "gzip JSON in one ConfigMap"
    else:
        form = "YAML in one ConfigMap"
    res.add(
        "(b) table as YAML / canonical JSON",
        f"{len(text) / 1e6:.2f} MB / {len(canonical) / 1e6:.2f} MB",
    )
    res.add("(b) gzipped JSON", f"{len(gz) / 1024:.0f} KiB")
    res.add("(b) packed form (bundle.pack)", form)
    res.add(
        "(b) YAML dump (kept only for small tables) / bundle.pack",
        f"{t_dump:.2f} s / {t_pack:.2f} s",
    )

    table_dir = work / "mounted"
    write_packed(packed, table_dir)

    # The router's reload, in steps: unpack, parse, validate, compile the catalog.
    files = {
        n: (table_dir / n).read_bytes()
        for n in (bundle.INDEX_KEY, bundle.GZIP_KEY, bundle.YAML_KEY)
        if (table_dir / n).exists()
    }
    raw, t_unpack = timed(
        lambda: bundle.unpack(
            files, lambda _cm, k: (table_dir / k).read_bytes() if (table_dir / k).exists() else None
        )
    )
    data, t_yaml = timed(lambda: yaml.safe_load(raw))
    _, t_parse = timed(lambda: parse_document(data))
    (table, checksum), t_read = timed(lambda: read_path(table_dir))
    gateway = Gateway(Metrics())
    _, t_install = timed(lambda: gateway.install(table, checksum))
    _, t_orjson = timed(lambda: orjson.loads(raw))
    res.add("(c) read_path (unpack + YAML-parse + validate)", f"{t_read:.2f} s")
    res.add(
        "(c)   of which unpack / yaml.safe_load / parse_document",
        f"{t_unpack:.2f} / {t_yaml:.2f} / {t_parse:.2f} s",
    )
    res.add("(c)   (the same bytes through orjson.loads)", f"{t_orjson:.3f} s")
    res.add("(c) Gateway.install (catalog + adapters)", f"{t_install:.2f} s")
    res.add("(c) reload in-process, read_path + install", f"{t_read + t_install:.2f} s", "-")
    return table_dir


def router_on_dir(fleet: Fleet, table_dir: Path, work: Path, res: Results) -> None:
    step("a router process serving that table from the mounted-ConfigMap directory")
    port = free_port()
    log = (work / "router-file.log").open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--config",
            str(table_dir),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port(port)),
            "--state-dir",
            str(work / "state-file"),
            "--no-usage",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "the router to be ready",
            lambda: http_json(f"http://127.0.0.1:{admin_port(port)}/readyz"),
            300,
        )
        ready = time.monotonic() - t0
        n = len(served_models(url, api_key_for(fleet.ns(0))))
        expected = fleet.models_in(0)
        res.add("(c) router process: start -> ready", f"{ready:.2f} s")
        res.add(
            "(c) router RSS with the table loaded",
            f"{rss_mib(proc.pid):.0f} MiB (peak {rss_mib(proc.pid, 'VmHWM'):.0f})",
            "-",
        )
        res.add(f"(c) GET /v1/models for {fleet.ns(0)}", f"{n} models (expected {expected})")
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


# -- part 2: a real API server --------------------------------------------------------------


@dataclass
class Version:
    at: float  # monotonic, when the watch delivered it
    checksum: str
    providers: int | None = None
    models: int | None = None
    parts: int = 0
    model_keys: frozenset[tuple[str, str]] | None = None  # (organization, name)


class ConfigMapWatch:
    """Follows the routing ConfigMap in a thread and keeps every version seen, in order."""

    def __init__(self, cp: Any, namespace: str, decode: bool = False) -> None:
        self.cp = cp
        self.namespace = namespace
        self.decode = decode
        self.versions: list[Version] = []
        self.changed = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ConfigMapWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True

    def latest(self) -> Version | None:
        with self.changed:
            return self.versions[-1] if self.versions else None

    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    def _run(self) -> None:
        sel = f"fieldSelector=metadata.name%3D{CONFIGMAP}"
        while not self._stop:
            try:
                listing = self.cp.request("GET", f"{self._path()}?{sel}").body
                for item in listing.get("items") or []:
                    self._seen(item)
                rv = listing["metadata"]["resourceVersion"]
                url = f"{self._path()}?{sel}&watch=1&resourceVersion={rv}&timeoutSeconds=3000"
                with self.cp._open("GET", url, None, None, 3600) as resp:
                    for line in resp:
                        if self._stop:
                            return
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._seen(event["object"])
            except Exception as exc:  # the server restarts or times out: list again
                if self._stop:
                    return
                print(f"    (ConfigMap watch: {exc}; again)", file=sys.stderr)
                time.sleep(0.2)

    def _seen(self, cm: dict[str, Any]) -> None:
        at = time.monotonic()
        checksum = ((cm.get("metadata") or {}).get("annotations") or {}).get(CHECKSUM_ANNOTATION)
        with self.changed:
            if not checksum or (self.versions and self.versions[-1].checksum == checksum):
                return
        v = Version(at, checksum)
        if self.decode:
            self._count(cm, v)
        with self.changed:
            self.versions.append(v)
            self.changed.notify_all()

    def _count(self, cm: dict[str, Any], v: Version) -> None:
        files = {k: s.encode() for k, s in (cm.get("data") or {}).items()}
        files.update({k: base64.b64decode(s) for k, s in (cm.get("binaryData") or {}).items()})

        def part(name: str, key: str) -> bytes | None:
            got = self.cp.request("GET", f"{self._path()}/{name}")
            if got.status != 200:
                return None
            b = (got.body.get("binaryData") or {}).get(key)
            return base64.b64decode(b) if b is not None else None

        try:
            if bundle.INDEX_KEY in files:
                v.parts = len(orjson.loads(files[bundle.INDEX_KEY])["parts"])
            raw = bundle.unpack(files, part)
            doc = orjson.loads(raw) if raw[:1] == b"{" else yaml.load(raw, Loader=_YamlLoader)
            models = doc.get("models") or []
            v.providers, v.models = len(doc.get("providers") or []), len(models)
            v.model_keys = frozenset((m.get("organization", ""), m["name"]) for m in models)
        except Exception:  # overwritten meanwhile (parts of a newer version): unknown
            pass

    def wait_for(self, pred: Callable[[Version], bool], timeout: float) -> Version:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for v in self.versions:
                    if pred(v):
                        return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no such ConfigMap version")
                self.changed.wait(min(left, 1.0))


def bind_rbac(cp: Any, system: str) -> None:
    """The shipped RBAC, bound to the operator's and the router's users (as tests/kube does)."""
    for path in (RBAC / "rbac-operator.yaml", RBAC / "rbac-router.yaml"):
        cp.kubectl("apply", "-n", system, "-f", str(path))
    bindings = [
        (
            "clusterrolebinding",
            "switchyard-operator-organizations",
            "switchyard-operator",
            None,
            "clusterrole",
        ),
        ("rolebinding", "switchyard-operator", "switchyard-operator", system, "role"),
        ("rolebinding", "switchyard-router", "switchyard-router", system, "role"),
    ]
    for kind, role, who, ns, role_kind in bindings:
        args = ["create", kind, f"{role}-{system}", f"--{role_kind}={role}", f"--user={who}"]
        cp.kubectl(*args, *(["-n", ns] if ns else []))


def start_operator(cp: Any, system: str, work: Path, tag: str) -> subprocess.Popen[bytes]:
    from tests.kube.controlplane import User

    op_user = next(u for u in cp.users if isinstance(u, User) and u.name == "switchyard-operator")
    config = cp.write_kubeconfig(work / "operator.kubeconfig", op_user)
    log = (work / f"operator-{tag}.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "operator",
            "--kubeconfig",
            str(config),
            "--namespace",
            system,
            "--health-port",
            "0",
            "--log-level",
            "warning",
        ],
        env=dict(os.environ, SWITCHYARD_NAMESPACE=system),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_router(cp: Any, system: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    router_user = next(u for u in cp.users if u.name == "switchyard-router")
    config = cp.write_kubeconfig(work / "router.kubeconfig", router_user)
    port = free_port()
    log = (work / "router-api.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--routing-configmap",
            f"{system}/{CONFIGMAP}",
            "--provider-keys-secret",
            f"{system}/{KEYS_SECRET}",
            "--kubeconfig",
            str(config),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port(port)),
            "--state-dir",
            str(work / "state-api"),
            "--no-usage",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(
        "the router to listen",
        lambda: http_json(f"http://127.0.0.1:{admin_port(port)}/healthz"),
        60,
    )
    return proc, url


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def kubectl_apply(cp: Any, *objects: dict[str, Any]) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cp.kubectl("apply", "-f", "-", input=json.dumps(doc))


def latency(
    cp: Any,
    system: str,
    router: str,
    watch: ConfigMapWatch,
    vllm_url: str,
    applies: int,
    res: Results,
) -> None:
    ns = "latency"
    key = api_key_for(ns)
    cp.kubectl("create", "namespace", ns)
    kubectl_apply(
        cp,
        api_key_secret(ns),
        provider_obj(ns, "vllm", vllm_url, True, 100),
        model_obj(ns, "warmup", "vllm", 0),
    )
    # Steady state first: the provider probed healthy, its health in the table,
    # the API key and the warm-up model served.
    wait_until(
        "the router to serve the warm-up model", lambda: "warmup" in served_models(router, key), 60
    )
    wait_until(
        "the provider's health in the table",
        lambda: any(
            p.get("healthStatus") == "healthy"
            for p in http_json(f"{router}/api/v1/llm/providers", key)["providers"]
        ),
        60,
    )
    time.sleep(1.0)  # let the status writes settle

    step(f"latency: {applies} applies, each a new LLMModel on provider {ns}/vllm")
    apply_series(cp, ns, "vllm", "lat", router, key, watch, applies, "(1)", res, "p95 < 3 s")
    res.notes.append(
        "apply -> served includes kubectl's own start-up (a new process each time) and the "
        "operator's 0.2 s debounce; the router is polled every 10 ms"
    )


def apply_series(
    cp: Any,
    ns: str,
    provider: str,
    prefix: str,
    router: str,
    key: str,
    watch: ConfigMapWatch,
    applies: int,
    tag: str,
    res: Results,
    target: str,
    timeout: float = 60,
) -> None:
    """``applies`` times: kubectl apply one new LLMModel, wait until the router lists it."""
    total: list[float] = []
    to_cm: list[float] = []
    cm_to_router: list[float] = []
    kubectl_s: list[float] = []
    for i in range(applies):
        name = f"{prefix}-{i:03d}"
        before = watch.latest()
        n_before = len(watch.versions)
        body = {"apiVersion": "v1", "kind": "List", "items": [model_obj(ns, name, provider, i)]}
        t0 = time.monotonic()
        cp.kubectl("apply", "-f", "-", input=json.dumps(body))
        t_kubectl = time.monotonic()
        wait_until(f"{name} to be served", partial(is_served, router, key, name), timeout, 0.01)
        t_served = time.monotonic()
        new = next(
            (
                v
                for v in watch.versions[n_before:]
                if before is None or v.checksum != before.checksum
            ),
            None,
        )
        total.append(t_served - t0)
        kubectl_s.append(t_kubectl - t0)
        if new is not None:
            to_cm.append(new.at - t0)
            cm_to_router.append(t_served - new.at)
        time.sleep(0.3)
    res.add(
        f"{tag} apply -> served, p50 / p95 / max (n={len(total)})",
        f"{pct(total, 50):.2f} / {pct(total, 95):.2f} / {max(total):.2f} s",
        target,
    )
    res.add(f"{tag}   kubectl apply itself, p50", f"{pct(kubectl_s, 50):.2f} s")
    if to_cm:
        res.add(
            f"{tag}   apply -> ConfigMap written, p50 / p95",
            f"{pct(to_cm, 50):.2f} / {pct(to_cm, 95):.2f} s",
        )
        res.add(
            f"{tag}   ConfigMap -> router serving, p50 / p95",
            f"{pct(cm_to_router, 50):.3f} / {pct(cm_to_router, 95):.3f} s",
        )


async def create_objects(cp: Any, objects: list[dict[str, Any]], concurrency: int = 16) -> float:
    """POST every object through the API, ``concurrency`` at a time; returns seconds."""
    import aiohttp

    ctx = cp.ssl_context()
    headers = {"Authorization": f"Bearer {cp.admin.token}", "Content-Type": "application/json"}

    def path(o: dict[str, Any]) -> str:
        ns = o["metadata"]["namespace"]
        if o["kind"] == "Secret":
            return f"/api/v1/namespaces/{ns}/secrets"
        plural = {"LLMProvider": "llmproviders", "LLMModel": "llmmodels"}[o["kind"]]
        return f"/apis/{GROUP_VERSION}/namespaces/{ns}/{plural}"

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for o in objects:
        queue.put_nowait(o)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    ) as session:

        async def worker() -> None:
            while True:
                try:
                    o = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                for attempt in range(5):
                    async with session.post(
                        cp.url + path(o), data=orjson.dumps(o), headers=headers
                    ) as resp:
                        body = await resp.read()
                        if resp.status in (200, 201, 409):
                            break
                        if resp.status == 429 or resp.status >= 500:
                            await asyncio.sleep(0.2 * (attempt + 1))
                            continue
                        raise RuntimeError(f"POST {path(o)}: {resp.status} {body[:300]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - t0


def count_ready_models(cp: Any, namespaces: list[str]) -> int:
    """LLMModels (in those namespaces) whose status the operator has written."""
    n = 0
    for ns in namespaces:
        cont = ""
        while True:
            q = f"?limit=2000{'&continue=' + cont if cont else ''}"
            body = cp.request(
                "GET", f"/apis/{GROUP_VERSION}/namespaces/{ns}/llmmodels{q}", timeout=60
            ).body
            for item in body.get("items") or []:
                if (item.get("status") or {}).get("observedGeneration"):
                    n += 1
            cont = (body.get("metadata") or {}).get("continue") or ""
            if not cont:
                break
    return n


def scale(
    cp: Any,
    system: str,
    router: str,
    router_proc: subprocess.Popen[bytes],
    watch: ConfigMapWatch,
    fleet: Fleet,
    work: Path,
    status_timeout: float,
    scale_applies: int,
    res: Results,
) -> None:
    namespaces = [fleet.ns(i) for i in range(fleet.namespaces)]
    step(
        f"scale: creating {len(namespaces)} namespaces, "
        f"{fleet.providers} providers, {fleet.models} models"
    )
    for ns in namespaces:
        cp.kubectl("create", "namespace", ns)
    objects: list[dict[str, Any]] = [api_key_secret(fleet.ns(0))]
    objects += fleet.provider_objs()
    objects += fleet.model_objs()
    secs = asyncio.run(create_objects(cp, objects))
    res.add(
        "(d) creating the objects through the API",
        f"{len(objects)} in {secs:.1f} s ({len(objects) / secs:.0f}/s, 16 at a time)",
    )
    already = watch.latest()
    assert already is not None
    base_models = already.models or 0
    want_models = base_models + fleet.models

    step("scale: a fresh operator process over all of it")
    t0 = time.monotonic()
    n_before = len(watch.versions)
    op = start_operator(cp, system, work, "scale")
    try:
        rss_samples: list[float] = []
        router_min = base_models
        full: Version | None = None
        deadline = t0 + 600
        while full is None and time.monotonic() < deadline:
            if op.poll() is not None:
                raise RuntimeError(
                    f"the operator exited ({op.returncode}); see {work}/operator-scale.log"
                )
            rss_samples.append(rss_mib(op.pid))
            with contextlib.suppress(OSError, ValueError):
                router_min = min(router_min, router_table_models(router))
            with contextlib.suppress(TimeoutError):
                full = watch.wait_for(
                    lambda v: v.at >= t0 and (v.models or 0) >= want_models, timeout=0.2
                )
        if full is None:
            raise TimeoutError("the operator did not publish every model in 600 s")
        rss_full = rss_mib(op.pid)
        cpu_full = cpu_seconds(op.pid)
        res.add(
            "(d) operator start -> first ConfigMap with every model",
            f"{full.at - t0:.1f} s",
            "-",
        )
        res.add(
            "(d) operator RSS then (peak so far)",
            f"{rss_full:.0f} MiB ({rss_mib(op.pid, 'VmHWM'):.0f})",
            "-",
        )
        res.add("(d) operator CPU time until then", f"{cpu_full:.1f} s")
        published = [v for v in watch.versions[n_before:] if v.at <= full.at]
        counts = [f"{v.providers}/{v.models}" if v.models is not None else "?" for v in published]
        res.add(
            "(d) tables published until then (providers/models)",
            f"{len(published)}: {', '.join(counts[:8])}{' ...' if len(counts) > 8 else ''}",
        )
        res.add(
            "(d) packed ConfigMap form in the cluster",
            f"{full.parts} part(s) + index" if full.parts else "one ConfigMap",
        )
        # Models published before the restart that a table published after it lacks.
        before_keys = already.model_keys or frozenset()
        dropped = [
            (v, len(before_keys - v.model_keys)) for v in published if v.model_keys is not None
        ]
        worst = max((n for _, n in dropped), default=0)
        res.add(
            "(d) models already served, missing from a table after restart",
            f"{worst} of {len(before_keys)} (in {sum(1 for _, n in dropped if n)} table(s))",
            "0 (no table should lose models)",
        )
        res.add(
            "(d) models in the router's table at its smallest, meanwhile",
            f"{router_min} (was {base_models}; sampled ~5/s)",
            f">= {base_models}",
        )
        if worst:
            first = next(v for v, n in dropped if n)
            res.notes.append(
                f"operator restart: {first.at - t0:.1f} s after its start the operator published a "
                f"table of {first.providers} providers and {first.models} models, lacking "
                f"{len(before_keys - (first.model_keys or frozenset()))} of the {len(before_keys)} "
                "models already served; the router installs what it is given"
            )

        # The router, still following the ConfigMap through the API, catches up.
        try:
            wait_until(
                "the router to serve the big table",
                lambda: router_table_models(router) >= want_models,
                300,
                0.1,
            )
            t_router = time.monotonic()
            res.add(
                "(d) ConfigMap (every model) -> router serving, via API",
                f"{t_router - full.at:.1f} s",
                "-",
            )
            res.add(
                "(d) that router's RSS after loading it (peak)",
                f"{rss_mib(router_proc.pid):.0f} MiB ({rss_mib(router_proc.pid, 'VmHWM'):.0f})",
            )
        except TimeoutError as exc:
            res.add("(d) ConfigMap -> router serving, via API", f"not within 300 s ({exc})")

        # Status write-back: every model gets its Ready condition.
        step("scale: waiting for the operator to write every LLMModel's status")
        t_status = None
        n_ready = 0
        until = time.monotonic() + status_timeout
        while time.monotonic() < until:
            n_ready = count_ready_models(cp, namespaces)
            if n_ready >= fleet.models:
                t_status = time.monotonic()
                break
            time.sleep(3)
        if t_status is not None:
            res.add("(d) operator start -> every LLMModel status written", f"{t_status - t0:.1f} s")
        else:
            res.add(
                "(d) LLMModel statuses written",
                f"{n_ready}/{fleet.models} after {time.monotonic() - t0:.0f} s (gave up)",
            )
        res.add(
            "(d) operator RSS settled (peak)",
            f"{rss_mib(op.pid):.0f} MiB ({rss_mib(op.pid, 'VmHWM'):.0f})",
        )
        res.add("(d) operator CPU time in all", f"{cpu_seconds(op.pid):.1f} s")
        if scale_applies:
            step(f"scale: {scale_applies} more applies with the whole fleet in the table")
            apply_series(
                cp,
                fleet.ns(0),
                "p-00000",
                "late",
                router,
                api_key_for(fleet.ns(0)),
                watch,
                scale_applies,
                "(e)",
                res,
                "(p95 < 3 s at small scale)",
                timeout=120,
            )
        later = [v for v in watch.versions if v.at > full.at]
        if later:
            res.notes.append(
                f"{len(later)} more table version(s) published after the full one "
                f"(models: {', '.join(str(v.models) for v in later[:5])})"
            )
    finally:
        stop(op)


def cluster(
    fleet: Fleet | None,
    applies: int,
    scale_applies: int,
    work: Path,
    status_timeout: float,
    res: Results,
) -> None:
    from tests.fakes import FakeVLLM
    from tests.kube.controlplane import ControlPlane, User, ensure_binaries, find_kubectl

    if find_kubectl() is None:
        res.notes.append("kubectl not found: the cluster parts were skipped")
        return
    step("starting etcd + kube-apiserver")
    cp = ControlPlane(
        ensure_binaries(), users=[User("switchyard-operator"), User("switchyard-router")]
    ).start()
    op: subprocess.Popen[bytes] | None = None
    router_proc: subprocess.Popen[bytes] | None = None
    watch: ConfigMapWatch | None = None
    try:
        step(f"control plane ready in {cp.start_seconds:.1f} s")
        cp.kubectl("apply", "-f", str(CRDS))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/llmproviders.switchyard.dev",
            "crd/llmmodels.switchyard.dev",
            "crd/prompttemplates.switchyard.dev",
        )
        system = "switchyard"
        cp.kubectl("create", "namespace", system)
        bind_rbac(cp, system)
        watch = ConfigMapWatch(cp, system, decode=fleet is not None).start()
        with FakeVLLM(api_key=None) as vllm:
            op = start_operator(cp, system, work, "latency")
            router_proc, router = start_router(cp, system, work)
            latency(cp, system, router, watch, vllm.url, applies, res)
            stop(op)
            op = None
            if fleet is not None:
                scale(
                    cp,
                    system,
                    router,
                    router_proc,
                    watch,
                    fleet,
                    work,
                    status_timeout,
                    scale_applies,
                    res,
                )
    finally:
        if watch is not None:
            watch.stop()
        stop(op)
        stop(router_proc)
        for name in ("operator-latency", "operator-scale", "router-api"):
            log = work / f"{name}.log"
            if log.exists() and "Traceback" in log.read_text(errors="replace"):
                res.notes.append(f"{name} logged a traceback; tail:\n{log.read_text()[-1500:]}")
        cp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--models", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument(
        "--scale-applies",
        type=int,
        default=5,
        help="applies timed again once the whole fleet is in the table (0: none)",
    )
    parser.add_argument(
        "--status-timeout",
        type=float,
        default=180,
        help="seconds to wait for the operator to write every LLMModel's status",
    )
    parser.add_argument("--no-cluster", action="store_true", help="only the in-process parts")
    parser.add_argument(
        "--no-scale-cluster",
        action="store_true",
        help="skip creating the fleet in the API server (part d)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="100 providers, 1,000 models, 5 + 2 applies"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if args.quick:
        args.providers, args.models, args.applies, args.scale_applies = 100, 1000, 5, 2
    fleet = Fleet(args.providers, args.models, min(args.namespaces, args.providers))

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="switchyard-obench-"))
    res = Results()
    try:
        table_dir = in_process(fleet, work, res)
        router_on_dir(fleet, table_dir, work, res)
        if not args.no_cluster:
            cluster(
                None if args.no_scale_cluster else fleet,
                args.applies,
                args.scale_applies,
                work,
                args.status_timeout,
                res,
            )
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"Switchyard operator benchmark: {fleet.providers} providers, {fleet.models} models, "
        f"{fleet.namespaces} namespaces; {args.applies} applies"
    )
    print(
        f"(scale providers: vllm at {DEAD_URL}, nothing listening, healthCheck.enabled false; "
        "the latency provider: one FakeVLLM, health checks on)"
    )
    print(f"{'what':<68}{'measured':<46}target")
    for r in res.rows:
        if r.target:
            print(f"  {r.label:<66}{r.value:<46}{r.target}")
    print()
    print("all figures:")
    for r in res.rows:
        print(f"  {r.label:<66}{r.value}")
    for note in res.notes:
        print(f"note: {note}")
    print(f"\nwhole run: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
