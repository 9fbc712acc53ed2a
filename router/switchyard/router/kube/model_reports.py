"""A router's word on a model's own failures, written to its LLMModel's status.

The router is the one that sees a model fail on real traffic (a 404, a 400 saying it
cannot do what was asked); the operator's probe only lists models. When a router takes
a model out, or sees it answer again, it writes ``status.router`` of the LLMModel the
table entry came from; the operator turns that into the model's ``Serving`` condition.
Writes happen on transitions only, in the background, and a failed write is logged,
never raised: serving does not wait for the API server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime
from typing import Any

from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.resources import LLM_MODELS

log = logging.getLogger("switchyard.router")


class ModelReports:
    def __init__(self, kube: KubeClient, replica: str | None = None) -> None:
        self.kube = kube
        self.replica = replica or socket.gethostname()
        self._said: dict[tuple[str, str], bool] = {}  # (namespace, name) → out
        self._writing: set[asyncio.Task[None]] = set()

    def report(
        self, namespace: str, name: str | None, out: bool, message: str, retry_seconds: float
    ) -> None:
        """Say (once per change) that the model is out, or serves again."""
        if name is None:  # a table written by hand: no object to write to
            return
        key = (namespace, name)
        if self._said.get(key, False) == out:
            return
        self._said[key] = out
        status = {
            "state": "out" if out else "serving",
            "message": message[:1024],
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "replica": self.replica[:253],
            "retrySeconds": retry_seconds if out else 0,
        }
        task = asyncio.get_running_loop().create_task(self._write(namespace, name, status))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.kube.merge_patch(
                LLM_MODELS, name, namespace, {"status": {"router": status}}, status=True
            )
        except KubeError as exc:
            log.warning("cannot write the status of LLMModel %s/%s: %s", namespace, name, exc)

    async def close(self) -> None:
        if self._writing:
            await asyncio.wait(self._writing, timeout=5)
