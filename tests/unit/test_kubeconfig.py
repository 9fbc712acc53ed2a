"""Finding cluster credentials as kubectl does, and failing loudly where it would."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.router.kube.config import load
from switchyard.router.kube.errors import KubeConfigError


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def kubeconfig(
    current: str | None = "main",
    server: str = "https://10.0.0.1:6443",
    user: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    contexts: tuple[str, ...] = ("main", "other"),
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c-main", "cluster": {"server": server, **(cluster or {})}},
            {"name": "c-other", "cluster": {"server": "https://other.example:6443"}},
        ],
        "users": [
            {"name": "u-main", "user": user or {"token": "main-token"}},
            {"name": "u-other", "user": {"token": "other-token"}},
        ],
        "contexts": [
            {"name": n, "context": {"cluster": f"c-{n}", "user": f"u-{n}", "namespace": f"ns-{n}"}}
            for n in contexts
        ],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


def test_the_current_context_is_used(tmp_path: Path) -> None:
    access = load(str(write(tmp_path / "config", kubeconfig())), environ={})
    assert access.server == "https://10.0.0.1:6443"
    assert access.namespace == "ns-main"
    assert access.config.user is not None and access.config.user.token == "main-token"
    assert "context main" in access.source


def test_a_mistyped_current_context_is_refused_not_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "config", kubeconfig(current="mian"))
    with pytest.raises(KubeConfigError, match=r"current-context 'mian' does not exist.*main"):
        load(str(path), environ={})


def test_no_current_context_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "config", kubeconfig(current=None))
    with pytest.raises(KubeConfigError, match="sets no current-context"):
        load(str(path), environ={})


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n"])
def test_an_empty_kubeconfig_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "config", text)
    with pytest.raises(KubeConfigError, match="sets no current-context"):
        load(str(path), environ={})


def test_a_kubeconfig_that_is_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="not valid YAML"):
        load(str(write(tmp_path / "a", "clusters: [")), environ={})
    with pytest.raises(KubeConfigError, match="not a mapping"):
        load(str(write(tmp_path / "b", "- 1\n- 2\n")), environ={})
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        load(str(tmp_path / "missing"), environ={})


def test_kubeconfig_lists_several_files_merged_first_wins(tmp_path: Path) -> None:
    first = write(
        tmp_path / "first",
        {
            "clusters": [{"name": "shared", "cluster": {"server": "https://first:6443"}}],
            "users": [{"name": "me", "user": {"token": "first-token"}}],
        },
    )
    second = write(
        tmp_path / "second",
        {
            "current-context": "work",
            "clusters": [{"name": "shared", "cluster": {"server": "https://second:6443"}}],
            "users": [{"name": "me", "user": {"token": "second-token"}}],
            "contexts": [{"name": "work", "context": {"cluster": "shared", "user": "me"}}],
        },
    )
    missing = tmp_path / "not-there"
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(missing), str(second)])}
    access = load(environ=env)
    assert access.server == "https://first:6443"
    assert access.config.user is not None and access.config.user.token == "first-token"
    assert access.namespace == "default"


def test_the_flag_wins_over_kubeconfig_and_the_service_account(tmp_path: Path) -> None:
    flag = write(tmp_path / "flag", kubeconfig(server="https://flag:6443"))
    env_file = write(tmp_path / "env", kubeconfig(server="https://env:6443"))
    sa = service_account(tmp_path)
    env = {"KUBECONFIG": str(env_file), "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert load(str(flag), environ=env, service_account=sa).server == "https://flag:6443"
    assert load(environ=env, service_account=sa).server == "https://env:6443"
    del env["KUBECONFIG"]
    assert load(environ=env, service_account=sa).source == "the pod's service account"


def service_account(tmp_path: Path, namespace: str = "switchyard") -> Path:
    sa = tmp_path / "sa"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text("sa-token\n")
    (sa / "namespace").write_text(namespace)
    (sa / "ca.crt").write_text("not read until a connection is made\n")
    return sa


@pytest.mark.parametrize(
    ("host", "url"),
    [("10.96.0.1", "https://10.96.0.1:443"), ("fd00::1", "https://[fd00::1]:443")],
)
def test_in_cluster_addresses_ipv4_and_ipv6(tmp_path: Path, host: str, url: str) -> None:
    sa = service_account(tmp_path)
    access = load(environ={"KUBERNETES_SERVICE_HOST": host}, service_account=sa)
    assert access.server == url
    assert access.namespace == "switchyard"
    user = access.config.user
    assert user is not None and user.token_file == str(sa / "token")  # read again on 401
    assert access.config.cluster.certificate_auth == str(sa / "ca.crt")


def test_relative_paths_are_resolved_against_the_kubeconfig_folder(tmp_path: Path) -> None:
    folder = tmp_path / "kube"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "token").write_text("from-a-file\n")
    write(
        folder / "config",
        kubeconfig(
            user={
                "tokenFile": "secrets/token",
                "client-certificate": "secrets/client.crt",
                "client-key": "secrets/client.key",
                "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "bin/plugin"},
            },
            cluster={"certificate-authority": "secrets/ca.crt"},
        ),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = Path.cwd()
    os.chdir(elsewhere)
    try:
        access = load("../kube/config", environ={})
    finally:
        os.chdir(old)
    user = access.config.user
    assert user is not None
    assert user.token_file == str(folder / "secrets/token")
    assert user.client_cert == str(folder / "secrets/client.crt")
    assert user.client_key == str(folder / "secrets/client.key")
    assert user.exec is not None and user.exec.command == str(folder / "bin/plugin")
    assert access.config.cluster.certificate_auth == str(folder / "secrets/ca.crt")


def test_an_exec_program_on_path_is_left_to_path_lookup(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        kubeconfig(
            user={
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "aws",
                    "args": ["eks", "get-token"],
                }
            }
        ),
    )
    user = load(str(path), environ={}).config.user
    assert user is not None and user.exec is not None and user.exec.command == "aws"


def test_a_context_naming_unknown_parts_is_refused(tmp_path: Path) -> None:
    doc = kubeconfig()
    doc["contexts"][0]["context"]["cluster"] = "nope"
    with pytest.raises(KubeConfigError, match="names no known cluster"):
        load(str(write(tmp_path / "a", doc)), environ={})
    doc = kubeconfig()
    doc["contexts"][0]["context"]["user"] = "nobody"
    with pytest.raises(KubeConfigError, match="unknown user 'nobody'"):
        load(str(write(tmp_path / "b", doc)), environ={})


def test_nowhere_to_look_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeConfigError, match="no cluster credentials"):
        load(environ={}, service_account=tmp_path / "no-sa")
    with pytest.raises(KubeConfigError, match="none of the files in KUBECONFIG"):
        load(environ={"KUBECONFIG": str(tmp_path / "x")})


def test_inline_certificates_leave_no_files_behind(tmp_path: Path) -> None:
    """lightkube decodes *-data into temporary files only while it builds the TLS context."""
    from tests.support.tls import self_signed

    cert, key = self_signed(tmp_path)
    b64 = {name: base64.b64encode(p.read_bytes()).decode() for name, p in (("c", cert), ("k", key))}
    path = write(
        tmp_path / "config",
        kubeconfig(
            user={"client-certificate-data": b64["c"], "client-key-data": b64["k"]},
            cluster={"certificate-authority-data": b64["c"]},
        ),
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    code = f"""
import asyncio, tempfile
tempfile.tempdir = {str(scratch)!r}
from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.config import load
async def main():
    client = KubeClient(load({str(path)!r}, environ={{}}))
    await client.close()
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert list(scratch.iterdir()) == []


def test_the_help_says_the_order_the_code_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from switchyard.router import cli

    with pytest.raises(SystemExit):
        cli.main(["router", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "$KUBECONFIG, then in-cluster, then ~/.kube/config" in text


def test_an_empty_kubeconfig_stops_the_router_with_its_reason(tmp_path: Path) -> None:
    empty = write(tmp_path / "config", "")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--routing-configmap",
            "switchyard/switchyard-routing",
            "--kubeconfig",
            str(empty),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "cannot reach the cluster" in out.stderr and "current-context" in out.stderr
    assert "Traceback" not in out.stderr
