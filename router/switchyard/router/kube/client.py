"""A small async client over lightkube: plain dicts in and out, one error type.

Objects stay the JSON the API server speaks (``dict``), so the operator's index and the
router's table code need no typed models; every failure becomes a ``KubeError`` that
carries the API server's status.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.types import PatchType

from switchyard.router.kube.config import ClusterAccess
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.resources import Resource

#: Watches end after this long on the server; the client then goes on from where it was.
WATCH_SECONDS = 240


@functools.cache
def _generic(res: Resource) -> type[GenericNamespacedResource]:
    return create_namespaced_resource(res.group, res.version, res.kind, res.plural)


def _object(res: Resource, body: dict[str, Any]) -> GenericNamespacedResource:
    obj: GenericNamespacedResource = _generic(res).from_dict(
        dict(body, apiVersion=res.api_version, kind=res.kind)
    )
    return obj


def _error(exc: Exception, what: str) -> KubeError:
    if isinstance(exc, ApiError):
        status = exc.status
        detail = status.message or status.reason or ""
        return KubeError(f"{what}: {status.code} {detail}", status.code, detail)
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code
        return KubeError(f"{what}: {code} {exc.response.reason_phrase}", code)
    if isinstance(exc, ConfigError):
        return KubeError(f"{what}: credentials: {exc}")
    if isinstance(exc, httpx2.TransportError):
        return KubeError(f"{what}: cannot reach the API server: {type(exc).__name__}: {exc}")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")


_FAILURES = (ApiError, httpx2.HTTPError, ConfigError, OSError)


class KubeClient:
    def __init__(self, access: ClusterAccess, field_manager: str = "switchyard") -> None:
        self.access = access
        self._client = AsyncClient(
            access.config,
            timeout=httpx2.Timeout(30.0, connect=10.0),
            field_manager=field_manager,
        )

    @property
    def namespace(self) -> str:
        return self.access.namespace

    async def get(self, res: Resource, name: str, namespace: str) -> dict[str, Any]:
        try:
            obj = await self._client.get(_generic(res), name, namespace=namespace)
        except _FAILURES as exc:
            raise _error(exc, f"get {res.kind} {namespace}/{name}") from None
        return dict(obj)

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        labels: dict[str, str | None] | None = None,
        fields: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object (in every namespace when ``namespace`` is None), and the list's
        resourceVersion to watch from."""
        listing = self._client.list(
            _generic(res),
            namespace=ALL_NS if namespace is None else namespace,
            labels=labels,  # type: ignore[arg-type]
            fields=fields,  # type: ignore[arg-type]
            chunk_size=500,
        )
        try:
            items = [dict(obj) async for obj in listing]
            return items, listing.resourceVersion
        except _FAILURES as exc:
            raise _error(exc, f"list {res.plural}") from None

    async def watch(
        self,
        res: Resource,
        namespace: str,
        resource_version: str,
        *,
        fields: dict[str, str] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(ADDED | MODIFIED | DELETED, object) after ``resource_version``, until an error:
        410 Gone when that version is too old, so the caller lists again."""
        events = self._client.watch(
            _generic(res),
            namespace=namespace,
            fields=fields,  # type: ignore[arg-type]
            resource_version=resource_version,
            server_timeout=WATCH_SECONDS,
        )
        try:
            async for kind, obj in events:
                yield kind, dict(obj)
        except _FAILURES as exc:
            raise _error(exc, f"watch {res.plural} in {namespace}") from None

    async def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        try:
            created = await self._client.create(_object(res, body))
        except _FAILURES as exc:
            raise _error(
                exc, f"create {res.kind} {meta.get('namespace')}/{meta.get('name')}"
            ) from None
        return dict(created)

    async def upsert(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the object, or create it when it does not exist yet."""
        meta = body.get("metadata") or {}
        try:
            replaced = await self._client.replace(_object(res, body))
        except ApiError as exc:
            if exc.status.code != 404:
                raise _error(
                    exc, f"replace {res.kind} {meta.get('namespace')}/{meta.get('name')}"
                ) from None
            return await self.create(res, body)
        except _FAILURES as exc:
            raise _error(
                exc, f"replace {res.kind} {meta.get('namespace')}/{meta.get('name')}"
            ) from None
        return dict(replaced)

    async def merge_patch(
        self,
        res: Resource,
        name: str,
        namespace: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """A JSON merge patch, of the object or (``status``) its status subresource."""
        target = _generic(res).Status if status else _generic(res)
        try:
            patched = await self._client.patch(
                target, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except _FAILURES as exc:
            raise _error(exc, f"patch {res.kind} {namespace}/{name}") from None
        return dict(patched)

    async def delete(self, res: Resource, name: str, namespace: str) -> None:
        try:
            await self._client.delete(_generic(res), name, namespace=namespace)
        except _FAILURES as exc:
            raise _error(exc, f"delete {res.kind} {namespace}/{name}") from None

    async def close(self) -> None:
        await self._client.close()
