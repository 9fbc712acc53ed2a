"""The routing table and the provider keys followed through the Kubernetes API.

- ``ConfigMapSource``: the operator's routing ConfigMap (and its parts, for a table
  packed into several); changes arrive within a second.
- ``SecretKeySource``: the provider-keys Secret, into the gateway's key ring.

As with a file, a new table is validated whole and a bad one keeps the last good one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from switchyard.router.errors import ConfigError
from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.follow import follow
from switchyard.router.kube.resources import CONFIGMAPS, SECRETS, Resource
from switchyard.router.table import bundle
from switchyard.router.table.loader import load_bytes
from switchyard.router.table.source import Install, Report

log = logging.getLogger("switchyard.router.table")


def configmap_files(obj: dict[str, Any]) -> dict[str, bytes]:
    files = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return files


class _Followed:
    """One object followed through the API by a background task."""

    resource: Resource

    def __init__(self, client: KubeClient, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.description = f"{self.resource.kind.lower()} {namespace}/{name}"
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _changed(self, obj: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def load_initial(self) -> None:
        """Nothing to do before the event loop runs; /readyz waits for the first table."""

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            follow(self.client, self.resource, self.namespace, self.name, self._changed, self._stop)
        )

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ConfigMapSource(_Followed):
    """Follow ``namespace/name`` through the API: changes arrive within a second."""

    resource = CONFIGMAPS

    def __init__(
        self, client: KubeClient, namespace: str, name: str, install: Install, report: Report
    ) -> None:
        super().__init__(client, namespace, name)
        self._install = install
        self._report = report
        self._checksum: str | None = None
        self.loaded = asyncio.Event()

    async def _changed(self, obj: dict[str, Any] | None) -> None:
        if obj is None:
            log.warning("%s does not exist (yet); keeping the current table", self.description)
            return
        files = configmap_files(obj)
        parts: dict[tuple[str, str], bytes] = {}
        try:
            if bundle.INDEX_KEY in files:
                for p in orjson.loads(files[bundle.INDEX_KEY]).get("parts", []):
                    cm = await self.client.get(CONFIGMAPS, p["configMap"], self.namespace)
                    parts[(p["configMap"], p["key"])] = configmap_files(cm).get(p["key"], b"")
            raw = bundle.unpack(files, lambda cm, key: parts.get((cm, key)))
            table, checksum = await asyncio.to_thread(load_bytes, raw, self.description)
            if checksum != self._checksum:
                self._install(table, checksum)
                self._checksum = checksum
                log.info("routing table from %s (sha256 %s)", self.description, checksum[:12])
        except ConfigError as exc:
            log.error("%s rejected, keeping the last good table: %s", self.description, exc)
            self._report("invalid", str(exc))
            return
        except Exception as exc:
            log.exception("%s could not be installed", self.description)
            self._report("invalid", f"{type(exc).__name__}: {exc}")
            return
        self._report("ok", None)
        self.loaded.set()


class SecretKeySource(_Followed):
    """Follow the provider-keys Secret through the API into the gateway's key ring."""

    resource = SECRETS

    def __init__(
        self, client: KubeClient, namespace: str, name: str, apply: Callable[[dict[str, str]], None]
    ) -> None:
        super().__init__(client, namespace, name)
        self._apply = apply

    async def _changed(self, obj: dict[str, Any] | None) -> None:
        data = (obj or {}).get("data") or {}
        self._apply(
            {k: base64.b64decode(v).decode("utf-8", "replace").strip() for k, v in data.items()}
        )
