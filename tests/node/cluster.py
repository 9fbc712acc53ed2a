"""A real single-node Kubernetes cluster, as plain processes: no Docker, no kind.

The control plane of ``tests/kube`` (etcd, kube-apiserver) serves a node made of
Debian's containerd, runc and CNI plugins and of kubelet, kube-proxy, kube-scheduler
and kube-controller-manager built from the same Kubernetes module. Images are loaded
into containerd from archives (``images.py``); CoreDNS gives pods names; a StorageClass
of hostPath volumes gives PersistentVolumeClaims something to bind to. NetworkPolicies
are enforced, as a cluster's network plugin would: kube-router's firewall (built from
the Go module proxy, ``netpol/build.sh``) keeps each pod's ingress to what its policies
admit, with iptables rules and ipsets.

Addresses exist only on this machine: the node's own address on the loopback link, the
pods' on a private bridge, the Services' behind kube-proxy's nftables rules. No pod reaches
anything outside (CoreDNS forwards nothing). ``stop()`` stops every process it started,
by its id, and puts the machine back as ``machine.Snapshot`` found it.

    with NodeCluster(bin_dir, images) as cluster:
        cluster.kubectl("get", "nodes")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from tests.kube.controlplane import ControlPlane, User, free_ports
from tests.node.images import Image
from tests.node.machine import Snapshot

NODE = "switchyard-node"
NODE_IP = "172.31.255.1"
BRIDGE = "sybr0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"  # the API server's --service-cluster-ip-range
DNS_IP = "10.0.0.10"
STORAGE_CLASS = "switchyard-test"
ENFORCER_BUILD = Path(__file__).resolve().parent / "netpol" / "build.sh"


class NodeError(RuntimeError):
    """The node could not be started."""


def _run(*argv: str, timeout: float = 60, check: bool = True, **kw: Any) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv[:5])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return str(proc.stdout)


def requirements() -> list[str]:
    """What this machine lacks to run a node (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    tools = ("containerd", "runc", "ctr", "ip", "nft", "iptables", "ipset", "buildah", "mmdebstrap")
    for tool in tools:
        if shutil.which(tool) is None:
            missing.append(tool)
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("the CNI plugins (containernetworking-plugins)")
    return missing


class NodeCluster:
    def __init__(
        self,
        bin_dir: Path,
        images: dict[str, Image],
        workdir: Path | None = None,
        *,
        containerd_root: Path | None = None,
    ) -> None:
        """``containerd_root``: keep containerd's content (the images) there, across
        clusters; by default it goes with the workdir."""
        self.bin_dir = bin_dir
        self.images = images
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="switchyard-node-"))
        self.containerd_root = containerd_root or self.workdir / "containerd" / "root"
        self.node_user = User(f"system:node:{NODE}", ("system:nodes",))
        self.proxy_user = User("system:kube-proxy")
        self.scheduler_user = User("system:kube-scheduler")
        self.cm_user = User("system:kube-controller-manager")
        self.netpol_user = User("system:switchyard-netpol")
        self.cp = ControlPlane(
            bin_dir,
            address=NODE_IP,
            for_nodes=True,
            users=(
                self.node_user,
                self.proxy_user,
                self.scheduler_user,
                self.cm_user,
                self.netpol_user,
            ),
            workdir=self.workdir / "controlplane",
            extra_apiserver_flags=(
                f"--kubelet-client-certificate={self.workdir / 'pki' / 'apiserver-kubelet.crt'}",
                f"--kubelet-client-key={self.workdir / 'pki' / 'apiserver-kubelet.key'}",
            ),
        )
        self.before: Snapshot | None = None
        self.seconds: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, TextIO] = {}

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> NodeCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, **kwargs)

    def start(self) -> NodeCluster:
        started = time.monotonic()
        self.before = Snapshot.take()
        try:
            self._step("network", self._network)
            self._step("firewall", self._firewall)
            (self.workdir / "controlplane").mkdir(parents=True, exist_ok=True)
            self._step("pki", self._pki)
            self._step("control plane", self.cp.start)
            self._step("containerd", self._containerd)
            self._step("images", self._load_images)
            self._step("cni", self._cni)
            self._step("kubelet", self._kubelet)
            self._step("controllers", self._controllers)
            self._step("kube-proxy", self._proxy)
            self._step("node ready", self._wait_node_ready)
            self._step("network policies", self._network_policies)
            self._step("addons", self._addons)
        except BaseException:
            self.stop()
            raise
        self.seconds["total"] = time.monotonic() - started
        return self

    def _step(self, name: str, fn: Any) -> None:
        t = time.monotonic()
        fn()
        self.seconds[name] = time.monotonic() - t

    def stop(self) -> list[str]:
        """Stop everything this cluster started and put the machine back; returns what
        had to be undone."""
        with contextlib.suppress(Exception):
            self._drain()
        for name in (
            "kube-router",
            "kube-proxy",
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
        ):
            self._terminate(name)
        self._stop_containers()
        self._terminate("containerd")
        self.cp.stop()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        undone: list[str] = []
        if self.before is not None:
            undone = self.before.restore()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return undone

    def _terminate(self, name: str, grace: float = 10) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def _drain(self) -> None:
        """Let kubelet stop the pods, as a node being shut down would."""
        self.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false",
            check=False, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self._tasks():
                return
            time.sleep(0.5)

    def _ctr(self, *args: str, check: bool = False, timeout: float = 30) -> str:
        return _run(
            "ctr", f"--address={self.sock}", "--namespace=k8s.io", *args,
            check=check, timeout=timeout,
        )  # fmt: skip

    def _tasks(self) -> list[str]:
        out = self._ctr("tasks", "list", "--quiet") if "containerd" in self._procs else ""
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def _stop_containers(self) -> None:
        """Every container's process, then the shims, which outlive containerd."""
        if "containerd" in self._procs:
            for task in self._tasks():
                self._ctr("tasks", "kill", "--signal", "SIGKILL", task)
            deadline = time.monotonic() + 10
            while self._tasks() and time.monotonic() < deadline:
                time.sleep(0.2)
            for task in self._tasks():
                self._ctr("tasks", "delete", "--force", task)
            for container in self._ctr("containers", "list", "--quiet").split():
                self._ctr("containers", "delete", container)
        marker = str(self.workdir / "containerd").encode()
        for pid in _pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and b"containerd-shim" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("w")
        self._logs[name] = log
        self._procs[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def _check_running(self, *names: str) -> None:
        for name in names:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- parts -------------------------------------------------------------------------
    def _network(self) -> None:
        """The node's own address: a private one on the loopback link, so that it exists
        only on this machine, and pods reach the node (and the API server) through it."""
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")

    def _firewall(self) -> None:
        """Pods may reach each other, Services and the node, and nothing else: what they
        send elsewhere is dropped here and never leaves the machine."""
        rules = f"""table inet switchyard-node {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    ip saddr {POD_CIDR} ip daddr != {{ {POD_CIDR}, {NODE_IP} }} counter drop
    iifname "{BRIDGE}" meta nfproto ipv6 counter drop
  }}
}}
"""
        _run("nft", "-f", "-", input=rules)

    def _pki(self) -> None:
        """A CA for the kubelet's clients, and the API server's client certificate."""
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca, key = pki / "kubelet-client-ca.crt", pki / "kubelet-client-ca.key"
        client_key, csr = pki / "apiserver-kubelet.key", pki / "apiserver-kubelet.csr"
        subject = "/O=system:masters/CN=kube-apiserver-kubelet-client"
        for argv in (
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=switchyard-kubelet-client-ca",
                "-keyout",
                str(key),
                "-out",
                str(ca),
            ],
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                str(client_key),
                "-out",
                str(csr),
            ],
            [
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca),
                "-CAkey",
                str(key),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                str(pki / "apiserver-kubelet.crt"),
            ],
        ):
            _run("openssl", *argv)

    @property
    def sock(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def _containerd(self) -> None:
        c = self.workdir / "containerd"
        c.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        config = c / "config.toml"
        config.write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{c / "state"}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.images["pause"].ref}"
  # Root in this VM may not raise a process's oom_score_adj: without this every
  # sandbox fails to start (runc: can't get final child's PID from pipe: EOF).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.workdir / "cni" / "net.d"}"
"""
        )
        self._spawn("containerd", ["containerd", f"--config={config}"])
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            self._check_running("containerd")
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not start:\n{self.log_tail('containerd')}")
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while _run("ctr", f"--address={self.sock}", "version", check=False) == "":
            if time.monotonic() > deadline:
                raise NodeError(f"containerd does not answer:\n{self.log_tail('containerd')}")
            time.sleep(0.2)

    def _load_images(self) -> None:
        present = set(self._ctr("images", "list", "--quiet").split())
        for image in self.images.values():
            if image.ref in present:
                continue
            self._ctr("images", "import", "--all-platforms", str(image.archive),
                      check=True, timeout=600)  # fmt: skip

    def _cni(self) -> None:
        conf = {
            "cniVersion": "1.0.0",
            "name": "switchyard",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        path = self.workdir / "cni" / "net.d" / "10-switchyard.conflist"
        path.write_text(json.dumps(conf, indent=2))

    def _kubelet(self) -> None:
        k = self.workdir / "kubelet"
        k.mkdir(parents=True, exist_ok=True)
        (healthz,) = free_ports(1)
        config = k / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.sock}",
                    "address": NODE_IP,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": healthz,
                    "readOnlyPort": 0,
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "clusterDNS": [DNS_IP],
                    "clusterDomain": "cluster.local",
                    "resolvConf": "",
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    # The images were loaded by hand: never collect them.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {
                            "clientCAFile": str(self.workdir / "pki" / "kubelet-client-ca.crt")
                        },
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "protectKernelDefaults": False,
                },
                indent=2,
            )
        )
        kubeconfig = self.cp.write_kubeconfig(k / "kubeconfig", self.node_user)
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={k / 'root'}",
                f"--cert-dir={k / 'pki'}",
                f"--hostname-override={NODE}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _controllers(self) -> None:
        cp = self.cp
        cm_port, sched_port = free_ports(2)
        cm_config = cp.write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig", self.cm_user
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                f"--service-account-private-key-file={cp.workdir / 'sa.key'}",
                f"--root-ca-file={cp.ca_file}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--cluster-name=switchyard",
                "--v=1",
            ],
        )
        sched_config = cp.write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", self.scheduler_user
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--v=1",
            ],
        )

    def _proxy(self) -> None:
        healthz, metrics = free_ports(2)
        kubeconfig = self.cp.write_kubeconfig(
            self.workdir / "kube-proxy.kubeconfig", self.proxy_user
        )
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "nftables",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "hostnameOverride": NODE,
                    "bindAddress": "127.0.0.1",
                    "healthzBindAddress": f"127.0.0.1:{healthz}",
                    "metricsBindAddress": f"127.0.0.1:{metrics}",
                    "clusterCIDR": POD_CIDR,
                    "nodePortAddresses": [f"{NODE_IP}/32"],
                    # Zero: leave the machine's conntrack sysctls alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                        "udpTimeout": "0s",
                        "udpStreamTimeout": "0s",
                    },
                }
            )
        )
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def _network_policies(self, seconds: float = 60) -> None:
        """kube-router's firewall alone (no routing, no service proxy, nothing listening):
        it reads the pods, namespaces and NetworkPolicies and keeps each pod's ingress to
        what its policies admit; a pod no policy selects takes anything, as Kubernetes
        says. The node itself (the kubelet's probes) is always admitted. It leaves its
        iptables chains and ipsets when it stops: ``Snapshot.restore()`` removes them."""
        binary = Path(_run("bash", str(ENFORCER_BUILD), timeout=3600).strip().splitlines()[-1])
        self.kubectl("apply", "-f", "-", input=_enforcer_rbac(self.netpol_user.name))
        kubeconfig = self.cp.write_kubeconfig(self.workdir / "netpol.kubeconfig", self.netpol_user)
        self._spawn(
            "kube-router",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--enable-pod-egress=false",
                "--enable-ipv6=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--health-port=0",
                "--metrics-port=0",
                "--v=1",
            ],
        )
        deadline = time.monotonic() + seconds
        while "KUBE-ROUTER-FORWARD" not in _run("iptables-save", check=False):
            self._check_running("kube-router")
            if time.monotonic() > deadline:
                raise NodeError(f"kube-router set up no firewall:\n{self.log_tail('kube-router')}")
            time.sleep(0.3)

    def _wait_node_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        last = ""
        while time.monotonic() < deadline:
            self._check_running(
                "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"
            )
            resp = self.cp.request("GET", f"/api/v1/nodes/{NODE}")
            if resp.status == 200:
                conditions = {
                    c["type"]: c for c in resp.body.get("status", {}).get("conditions", [])
                }
                ready = conditions.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = f"{ready.get('reason')}: {ready.get('message')}"
            time.sleep(0.3)
        raise NodeError(f"node not Ready in {seconds:g}s ({last}):\n{self.log_tail('kubelet')}")

    def _addons(self) -> None:
        manifests = _addons(self.images["coredns"].ref, self.workdir / "volumes")
        self.kubectl("apply", "-f", "-", input=manifests, timeout=60)
        self.kubectl(
            "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s",
            timeout=130,
        )  # fmt: skip

    # -- for tests ---------------------------------------------------------------------
    def diagnose(self, lines: int = 15) -> str:
        """The pods and the end of each container's log: what a failing test shows."""
        out = [self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout]
        for log in sorted((self.workdir / "pod-logs").glob("*/*/*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.parent.parent.name}/{log.parent.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def service_ip(self, namespace: str, name: str) -> str:
        out = self.kubectl(
            "-n", namespace, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"
        )
        return out.stdout.strip()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _enforcer_rbac(user: str) -> str:
    """What kube-router's firewall reads: its informers list and watch these."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "switchyard-test-netpol"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "switchyard-test-netpol"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "switchyard-test-netpol",
        },
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    return "\n---\n".join(json.dumps(d) for d in (role, binding))


def _addons(coredns: str, volumes: Path, count: int = 10) -> str:
    """CoreDNS (as kube-dns), a StorageClass of hostPath volumes, and the volumes."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": "kube-system"},
         # No forward plugin: names outside the cluster do not resolve, so no pod
         # reaches anything beyond this machine by name.
         "data": {"Corefile": (
             ".:1053 {\n  errors\n  health :8080\n  ready :8181\n"
             "  kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
             "    pods insecure\n    fallthrough in-addr.arpa ip6.arpa\n  }\n"
             "  cache 30\n  loop\n  reload\n}\n"
         )}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system",
                      "labels": {"k8s-app": "kube-dns"}},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
             "template": {
                 "metadata": {"labels": {"k8s-app": "kube-dns"}},
                 "spec": {
                     "serviceAccountName": "coredns",
                     "dnsPolicy": "Default",
                     "containers": [{
                         "name": "coredns",
                         "image": coredns,
                         "imagePullPolicy": "Never",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "ports": [{"containerPort": 1053, "protocol": "UDP", "name": "dns"},
                                   {"containerPort": 1053, "protocol": "TCP", "name": "dns-tcp"}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                            "periodSeconds": 1},
                         "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                     }],
                     "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": {"k8s-app": "kube-dns"}},
         "spec": {"clusterIP": DNS_IP, "selector": {"k8s-app": "kube-dns"},
                  "ports": [{"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "targetPort": 1053,
                             "protocol": "TCP"}]}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS,
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "kubernetes.io/no-provisioner",
         "volumeBindingMode": "WaitForFirstConsumer"},
    ]  # fmt: skip
    for i in range(count):
        path = volumes / f"pv{i}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # hostPath volumes take no fsGroup: any pod user may write
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"switchyard-test-pv{i}"},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": STORAGE_CLASS,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "kubernetes.io/hostname",
                                                       "operator": "In", "values": [NODE]}]}
                            ]
                        }
                    },
                },
            }
        )  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def main() -> None:
    """Start a node cluster with every image, print how long each step took, wait for Ctrl-C."""
    import sys

    from tests.kube.controlplane import ensure_binaries
    from tests.node.images import Images

    missing = requirements()
    if missing:
        sys.exit(f"cannot run a node here: missing {', '.join(missing)}")
    images = Images()
    try:
        built = images.all()
    finally:
        images.close()
    cluster = NodeCluster(ensure_binaries(node=True), built)
    # Stopped by SIGTERM too (a background job ignores SIGINT): put the machine back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cluster.start()
    try:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.seconds.items())
        print(f"node ready: {steps}", flush=True)
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        if "--once" not in sys.argv:
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        undone = cluster.stop()
        print("put back: " + ("; ".join(undone) or "nothing"), flush=True)
        if cluster.before is not None:
            left = cluster.before.differences()
            print("still changed: " + ("; ".join(left) or "nothing"), flush=True)


if __name__ == "__main__":
    main()
