"""Just enough of the Kubernetes API for the router: read and watch one object.

The router must start fast and stay small, so it speaks to the API server over
its own aiohttp session instead of importing a Kubernetes client library.
Credentials come from the pod's service account, or from a kubeconfig file
(a token or client certificate, as kubectl would use them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

log = logging.getLogger("switchyard.router.kube")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class KubeAccess:
    server: str
    token: str | None = None
    token_file: Path | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    namespace: str = "default"

    @classmethod
    def discover(cls, kubeconfig: str | None = None) -> KubeAccess:
        """In a pod: the service account. Else the kubeconfig ($KUBECONFIG, ~/.kube/config)."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            ns_file = SA_DIR / "namespace"
            return cls(
                server=f"https://{host}:{port}",
                token_file=SA_DIR / "token",
                ca_file=str(SA_DIR / "ca.crt"),
                namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
            )
        return cls.from_kubeconfig(Path(path or Path.home() / ".kube" / "config"))

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeAccess:
        try:
            cfg = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise KubeError(f"cannot read kubeconfig {path}: {exc}") from None
        ctx_name = cfg.get("current-context")
        contexts = {c["name"]: c["context"] for c in cfg.get("contexts") or ()}
        ctx: dict[str, Any] = contexts.get(ctx_name) or next(iter(contexts.values()), {})
        clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or ()}
        users = {u["name"]: u.get("user") or {} for u in cfg.get("users") or ()}
        cluster = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()), None)
        if cluster is None:
            raise KubeError(f"kubeconfig {path} names no cluster")
        user = users.get(ctx.get("user"), {})

        def materialize(data_key: str, file_key: str, src: dict[str, Any]) -> str | None:
            if src.get(file_key):
                return str((path.parent / src[file_key]).resolve())
            if src.get(data_key):
                fd, name = tempfile.mkstemp(prefix="switchyard-kube-")
                os.write(fd, base64.b64decode(src[data_key]))
                os.close(fd)
                return name
            return None

        token_file = user.get("tokenFile")
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            token=user.get("token"),
            token_file=Path(token_file) if token_file else None,
            ca_file=materialize("certificate-authority-data", "certificate-authority", cluster),
            cert_file=materialize("client-certificate-data", "client-certificate", user),
            key_file=materialize("client-key-data", "client-key", user),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            namespace=ctx.get("namespace") or "default",
        )

    def bearer(self) -> str | None:
        if self.token_file is not None:
            # Projected service-account tokens rotate; read each time.
            return self.token_file.read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class KubeClient:
    def __init__(self, access: KubeAccess) -> None:
        self.access = access
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=8),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                # A watch event carries the whole object on one line: a full ConfigMap
                # is over a megabyte once base64-encoded.
                read_bufsize=4 * 1024 * 1024,
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        token = self.access.bearer()
        if token:
            h["Authorization"] = f"Bearer {token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(
            method,
            self.access.server + path,
            data=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                try:
                    message = orjson.loads(raw).get("message", "")
                except (orjson.JSONDecodeError, AttributeError):
                    message = raw[:300].decode("utf-8", "replace")
                raise KubeError(f"{method} {path}: {resp.status} {message}", resp.status)
            return orjson.loads(raw) if raw else None

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        """Events of a watch from a resource version, until the server ends it."""
        sep = "&" if "?" in path else "?"
        url = (
            f"{self.access.server}{path}{sep}watch=1&resourceVersion={resource_version}"
            "&allowWatchBookmarks=true&timeoutSeconds=240"
        )
        async with self.session.get(
            url, headers=self._headers(), timeout=aiohttp.ClientTimeout(sock_read=300)
        ) as resp:
            if resp.status >= 400:
                raise KubeError(f"watch {path}: {resp.status}", resp.status)
            async for line in resp.content:
                if line.strip():
                    yield orjson.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def follow_object(
    client: KubeClient,
    collection: str,
    name: str,
    on_change: Callable[[dict[str, Any] | None], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Call ``on_change`` with the object (or None when absent) now and on every change."""
    delay = 1.0
    selector = f"{collection}?fieldSelector=metadata.name%3D{name}"
    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = await client.get(selector)
                items = listing.get("items") or []
                await on_change(items[0] if items else None)
                rv = str(listing["metadata"]["resourceVersion"])
            delay = 1.0
            async for event in client.watch(selector, rv):
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    rv = None  # e.g. 410 Gone: the version is too old; list again
                    break
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED"):
                    await on_change(obj)
                elif kind == "DELETED":
                    await on_change(None)
                if stop.is_set():
                    return
            # The server ended the watch (its timeout): resume from the last version.
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever happens, keep following
            log.warning("following %s/%s: %s; retrying in %.0fs", collection, name, exc, delay)
            rv = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)
