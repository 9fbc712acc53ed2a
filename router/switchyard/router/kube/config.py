"""Credentials for a cluster, found the way kubectl and controllers find them.

Order: an explicit ``--kubeconfig`` file; else every file in ``$KUBECONFIG`` (merged as
kubectl merges them: the first file to name a cluster, user or context wins, and the
first ``current-context`` wins); else the pod's service account; else
``~/.kube/config``. The current context must exist: a mistyped one is an error, never a
fall-back to some other cluster. Relative paths are resolved against the folder of the
file that holds them. The result is lightkube's configuration, whose client runs exec
credential plugins (EKS, GKE, AKS, OIDC) and re-reads token files when a token is
refused; ``login`` turns the same configuration into plain credentials for kopf.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Cluster, User, UserExec
from lightkube.core.exceptions import ConfigError

from switchyard.router.kube.errors import KubeConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")

#: The ExecCredential versions plugins speak. Their ``status.token`` is the same field in
#: all of them; lightkube only names the beta ones, so v1 is handed to it as v1beta1.
_EXEC_VERSIONS = {
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
}


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How to reach one cluster: lightkube's configuration with every path absolute."""

    config: SingleConfig
    source: str  # where it came from, for messages; never holds a secret

    @property
    def server(self) -> str:
        return self.config.cluster.server

    @property
    def namespace(self) -> str:
        return self.config.namespace


def load(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> ClusterAccess:
    """The credentials to use; ``KubeConfigError`` says what is missing or wrong."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        return _from_files([Path(kubeconfig).expanduser()], f"--kubeconfig {kubeconfig}")
    listed = [Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        existing = [p for p in listed if p.exists()]
        if not existing:
            raise KubeConfigError(
                f"none of the files in KUBECONFIG exists: {', '.join(map(str, listed))}"
            )
        return _from_files(existing, f"KUBECONFIG={env['KUBECONFIG']}")
    if env.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").exists():
        return _in_cluster(env, service_account)
    default = DEFAULT_KUBECONFIG.expanduser()
    if not default.exists():
        raise KubeConfigError(
            f"no cluster credentials: not in a pod, KUBECONFIG is not set and {default} "
            "does not exist (give --kubeconfig)"
        )
    return _from_files([default], str(default))


def _in_cluster(env: Mapping[str, str], sa: Path) -> ClusterAccess:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    namespace_file = sa / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
    ca = sa / "ca.crt"
    # The kubelet rotates projected tokens: lightkube reads the file again when the API
    # server refuses the one it holds.
    config = KubeConfig.from_one(
        cluster=Cluster(
            server=f"https://{host}:{port}",
            certificate_auth=str(ca) if ca.exists() else None,
        ),
        user=User(token_file=str(sa / "token")),
        namespace=namespace,
    )
    return ClusterAccess(_single(config), "the pod's service account")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")
    return data


_PATH_FIELDS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


def _resolved(section: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    """An entry with its relative paths made absolute against ``base``."""
    out = dict(entry)
    for key in _PATH_FIELDS[section]:
        value = out.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            out[key] = str(base / os.path.expanduser(value))
    exec_ = out.get("exec")
    if section == "user" and isinstance(exec_, dict):
        command = exec_.get("command")
        # kubectl resolves a relative command only when it names a path, not a program.
        if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
            out["exec"] = dict(exec_, command=str(base / command))
    return out


def _from_files(paths: list[Path], source: str) -> ClusterAccess:
    merged: dict[str, dict[str, Any]] = {"cluster": {}, "user": {}, "context": {}}
    current: str | None = None
    for path in paths:
        data = _read(path)
        base = path.resolve().parent
        if current is None and data.get("current-context"):
            current = str(data["current-context"])
        for section in ("cluster", "user", "context"):
            for item in data.get(f"{section}s") or []:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise KubeConfigError(f"kubeconfig {path}: every {section} needs a name")
                body = item.get(section) or {}
                if section != "context":
                    body = _resolved(section, body, base)
                merged[section].setdefault(item["name"], body)
    if current is None:
        raise KubeConfigError(
            f"{source} sets no current-context (kubectl config use-context NAME sets one)"
        )
    context = merged["context"].get(current)
    if context is None:
        known = ", ".join(sorted(merged["context"])) or "none"
        raise KubeConfigError(
            f"{source}: current-context {current!r} does not exist (contexts: {known})"
        )
    cluster_name = context.get("cluster")
    if cluster_name not in merged["cluster"]:
        raise KubeConfigError(f"{source}: context {current!r} names no known cluster")
    if not merged["cluster"][cluster_name].get("server"):
        raise KubeConfigError(f"{source}: cluster {cluster_name!r} has no server")
    user_name = context.get("user")
    if user_name and user_name not in merged["user"]:
        raise KubeConfigError(f"{source}: context {current!r} names unknown user {user_name!r}")
    users = {n: _lightkube_user(u) for n, u in merged["user"].items()}
    try:
        config = KubeConfig.from_dict(
            {
                "current-context": current,
                "clusters": [{"name": n, "cluster": c} for n, c in merged["cluster"].items()],
                "contexts": [{"name": n, "context": c} for n, c in merged["context"].items()],
                "users": [{"name": n, "user": u} for n, u in users.items()],
            }
        )
    except (ConfigError, ValueError, TypeError) as exc:
        raise KubeConfigError(f"{source}: {exc}") from None
    return ClusterAccess(_single(config), f"{source} (context {current})")


def _lightkube_user(user: dict[str, Any]) -> dict[str, Any]:
    exec_ = user.get("exec")
    if isinstance(exec_, dict) and exec_.get("apiVersion") == "client.authentication.k8s.io/v1":
        return dict(user, exec=dict(exec_, apiVersion="client.authentication.k8s.io/v1beta1"))
    return user


def _single(config: KubeConfig) -> SingleConfig:
    single = config.get()
    assert single is not None
    if single.user is None:  # an anonymous context: lightkube wants a user all the same
        single = single._replace(user=User())
    return single


# -- plain credentials, for kopf ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Credentials:
    """What kopf's ``ConnectionInfo`` takes: paths or data, a bearer token, an expiry."""

    server: str
    namespace: str
    insecure: bool = False
    ca_path: str | None = None
    ca_data: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None
    expiration: datetime | None = None


async def login(access: ClusterAccess) -> Credentials:
    """Credentials as of now: token files read, exec plugins run."""
    cluster, user = access.config.cluster, access.config.user or User()
    token = user.token
    if user.token_file:
        try:
            token = (await asyncio.to_thread(Path(user.token_file).read_text)).strip()
        except OSError as exc:
            raise KubeConfigError(
                f"cannot read token file {user.token_file}: {exc.strerror or exc}"
            ) from None
    cert_data, key_data, expiration = user.client_cert_data, user.client_key_data, None
    if user.exec is not None and not token:
        issued = await run_exec_plugin(user.exec)
        token = issued.get("token") or None
        # Certificates from a plugin are PEM, which kopf takes as they are.
        cert_data = issued.get("clientCertificateData") or cert_data
        key_data = issued.get("clientKeyData") or key_data
        if issued.get("expirationTimestamp"):
            expiration = datetime.fromisoformat(
                str(issued["expirationTimestamp"]).replace("Z", "+00:00")
            )
    if user.auth_provider:
        raise KubeConfigError(
            f"{access.source}: auth-provider credentials are not supported; "
            "use an exec credential plugin"
        )
    return Credentials(
        server=cluster.server,
        namespace=access.namespace,
        insecure=cluster.insecure,
        ca_path=cluster.certificate_auth,
        ca_data=cluster.certificate_auth_data,
        token=token,
        username=user.username,
        password=user.password,
        certificate_path=user.client_cert if not cert_data else None,
        certificate_data=cert_data,
        private_key_path=user.client_key if not key_data else None,
        private_key_data=key_data,
        expiration=expiration,
    )


async def run_exec_plugin(spec: UserExec, seconds: float = 60.0) -> dict[str, Any]:
    """Run a credential plugin as kubectl does and return its ``status``."""
    if spec.apiVersion not in _EXEC_VERSIONS:
        raise KubeConfigError(f"exec credential plugin apiVersion {spec.apiVersion} is unknown")
    env = dict(os.environ)
    env.update({v.name: v.value for v in spec.env or ()})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": spec.apiVersion,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            spec.command,
            *(spec.args or ()),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        hint = f" ({spec.installHint.strip()})" if spec.installHint else ""
        raise KubeConfigError(
            f"cannot run exec credential plugin {spec.command!r}: {exc.strerror or exc}{hint}"
        ) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        raise KubeConfigError(
            f"exec credential plugin {spec.command!r} gave no answer in {seconds:g}s"
        ) from None
    if proc.returncode != 0:
        raise KubeConfigError(
            f"exec credential plugin {spec.command!r} failed ({proc.returncode}): "
            f"{err.decode(errors='replace').strip()[:500]}"
        )
    try:
        status = json.loads(out)["status"]
    except (ValueError, KeyError, TypeError):
        raise KubeConfigError(
            f"exec credential plugin {spec.command!r} did not print an ExecCredential"
        ) from None
    if not isinstance(status, dict):
        raise KubeConfigError(f"exec credential plugin {spec.command!r}: status is not a mapping")
    return status
