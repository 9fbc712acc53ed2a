"""Fixtures for the tests on a real node (see cluster.py).

``node_cluster`` (session) builds what is missing (the node's binaries, the images),
starts a control plane and a node, and at the end stops them and checks that the
machine is as it was. Where a node cannot run (not root, tools missing, no Go) the
tests skip with the reason; SWITCHYARD_SKIP_NODE=1 skips them on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kube.controlplane import ControlPlaneError, ensure_binaries, find_kubectl
from tests.node.cluster import NodeCluster, requirements
from tests.node.images import ImageError, Images

#: Cold: the node's Go builds, Ollama's C++ and every image; warm: seconds.
NODE_TEST_TIMEOUT = 5400


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    if os.environ.get("SWITCHYARD_SKIP_NODE") == "1":
        pytest.skip("SWITCHYARD_SKIP_NODE=1")
    missing = requirements()
    if find_kubectl() is None:
        missing.append("kubectl")
    if missing:
        pytest.skip(f"a node needs {', '.join(missing)} (.ci/run installs them)")
    try:
        bin_dir = ensure_binaries(node=True)
    except ControlPlaneError as exc:
        if "go is not on PATH" in str(exc):
            pytest.skip(str(exc))
        raise
    images = Images()
    try:
        built = images.all()
    except ImageError as exc:
        pytest.fail(f"the node's images could not be built: {exc}")
    finally:
        images.close()
    cluster = NodeCluster(bin_dir, built)
    cluster.start()
    try:
        yield cluster
    finally:
        undone = cluster.stop()
        print(f"\nnode stopped; put back: {'; '.join(undone) or 'nothing'}")
        assert cluster.before is not None
        left = cluster.before.differences()
        assert left == [], f"the machine is not as it was: {left}"
