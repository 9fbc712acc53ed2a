"""The real control plane itself: version, CRDs with CEL validation, RBAC, watches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube.controlplane import KUBERNETES_VERSION, ControlPlane
from tests.kube.fixtures import KUBE_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(KUBE_TEST_TIMEOUT)

CRD_NAME = "widgets.tests.switchyard.dev"
CEL_MESSAGE = "minReplicas must not exceed replicas"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "tests.switchyard.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["replicas"],
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.minReplicas)"
                                        " || self.minReplicas <= self.replicas",
                                        "message": CEL_MESSAGE,
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, replicas: int, min_replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "tests.switchyard.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "minReplicas": min_replicas},
        }
    )


def test_server_reports_the_pinned_version(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    server = out["serverVersion"]
    assert server["gitVersion"] == KUBERNETES_VERSION
    assert (server["major"], server["minor"]) == ("1", KUBERNETES_VERSION.split(".")[1])


def test_crd_with_a_cel_rule_validates_objects(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")

    bad = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=widget("bad", 1, 3), check=False
    )
    assert bad.returncode != 0
    assert CEL_MESSAGE in bad.stderr

    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 3, 1))
    got = json.loads(
        control_plane.kubectl("get", "widget", "good", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"] == {"replicas": 3, "minReplicas": 1}
    assert (
        control_plane.kubectl("get", "widget", "bad", "-n", namespace, check=False).returncode != 0
    )


def test_rbac_applies_to_the_non_admin_user(control_plane: ControlPlane, namespace: str) -> None:
    user = control_plane.user
    denied = control_plane.kubectl("get", "secrets", "-n", namespace, user=user, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f'User "{user.name}" cannot list resource "secrets"' in denied.stderr

    # A Role for ConfigMaps lets the user read those, and still not Secrets.
    control_plane.kubectl(
        "create",
        "role",
        "cm-reader",
        "-n",
        namespace,
        "--verb=get,list,watch",
        "--resource=configmaps",
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        namespace,
        "--role=cm-reader",
        f"--user={user.name}",
    )
    control_plane.kubectl("get", "configmaps", "-n", namespace, user=user)
    assert (
        control_plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets", user=user).status
        == 403
    )
    assert (
        control_plane.request("GET", f"/api/v1/namespaces/{namespace}/configmaps", user=user).status
        == 200
    )


def test_configmap_can_be_created_and_watched(control_plane: ControlPlane, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    listed = control_plane.request("GET", path)
    assert listed.status == 200
    since = listed.body["metadata"]["resourceVersion"]

    control_plane.kubectl(
        "create", "configmap", "routes", "-n", namespace, "--from-literal=model=a"
    )
    control_plane.kubectl(
        "patch", "configmap", "routes", "-n", namespace, "-p", '{"data":{"model":"b"}}'
    )

    events = control_plane.watch(f"{path}?resourceVersion={since}&timeoutSeconds=10")
    seen = [
        (e["type"], e["object"]["metadata"]["name"], e["object"]["data"]["model"])
        for e in (next(events), next(events))
    ]
    events.close()
    assert seen == [("ADDED", "routes", "a"), ("MODIFIED", "routes", "b")]
