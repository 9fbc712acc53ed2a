"""The kube fixtures, for the tests in this folder."""

from tests.kube.fixtures import control_plane, namespace

__all__ = ["control_plane", "namespace"]
