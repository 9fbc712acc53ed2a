"""Errors from the Kubernetes API or from reading credentials for it."""

from __future__ import annotations


class KubeError(Exception):
    """The API server refused or could not be reached; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        #: The API server's own message (a validation error names the field).
        self.detail = detail


class KubeConfigError(Exception):
    """No usable credentials: the kubeconfig or the service account is missing or wrong."""
