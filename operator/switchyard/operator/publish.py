"""Write what the compiler produced: the routing ConfigMap(s), the provider-keys
Secret, and the status of each object. Writes happen only when content changed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml

from switchyard.operator.config import OperatorConfig
from switchyard.router.contract import CHECKSUM_ANNOTATION, MANAGED_BY_OPERATOR
from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.resources import (
    CONFIGMAPS,
    EVENTS,
    LLM_MODELS,
    LLM_PROVIDERS,
    PROMPT_TEMPLATES,
    SECRETS,
)
from switchyard.router.table import bundle

log = logging.getLogger("switchyard.operator")


_BY_PLURAL = {r.plural: r for r in (LLM_PROVIDERS, LLM_MODELS, PROMPT_TEMPLATES)}


def now(precise: bool = False) -> str:
    """RFC 3339 in UTC; ``precise`` keeps microseconds (for probe times)."""
    stamp = datetime.now(UTC)
    if precise:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    current: list[dict[str, Any]] | None, new: dict[str, tuple[bool, str, str]], generation: int
) -> list[dict[str, Any]]:
    """Conditions with lastTransitionTime kept unless the status flips; conditions of
    other types (another writer's) are kept as they are."""
    old = {c.get("type"): c for c in current or []}
    out = [c for t, c in old.items() if t not in new]
    for ctype, (ok, reason, message) in sorted(new.items()):
        status = "True" if ok else "False"
        prev = old.get(ctype)
        changed = prev is None or prev.get("status") != status
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message[:1024],
                "lastTransitionTime": now()
                if changed or not prev
                else prev.get("lastTransitionTime"),
                "observedGeneration": generation,
            }
        )
    return sorted(out, key=lambda c: str(c.get("type")))


class Publisher:
    def __init__(self, client: KubeClient, config: OperatorConfig) -> None:
        self.client = client
        self.config = config
        self.published: str | None = None  # checksum of what is in the ConfigMap
        self.keys_digest: str | None = None
        #: What everything published belongs to, so that the cluster's garbage collector
        #: removes it with its owner: the settings ConfigMap (a Helm release's), if any.
        self.owner: dict[str, Any] | None = None
        self.parts: set[str] = set()

    def own(self, obj: dict[str, Any]) -> bool:
        """Make ``obj`` (the settings ConfigMap) the owner of what is published; True
        when that is new, and everything is written again to carry it."""
        meta = obj.get("metadata") or {}
        owner = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
        }
        if not owner["uid"] or owner == self.owner:
            return False
        self.owner = owner
        self.published = self.keys_digest = None
        return True

    def _metadata(self, name: str, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.config.namespace,
            "labels": MANAGED_BY_OPERATOR,
            **extra,
        }
        if self.owner is not None:
            meta["ownerReferences"] = [self.owner]
        return meta

    async def load_published(self) -> None:
        """Learn what is already published, so a restart does not rewrite it, and which
        part ConfigMaps exist, so the next table's write removes stale ones."""
        ns = self.config.namespace
        try:
            cm = await self.client.get(CONFIGMAPS, self.config.configmap, ns)
            self.published = (cm["metadata"].get("annotations") or {}).get(CHECKSUM_ANNOTATION)
        except KubeError as exc:
            if exc.status != 404:
                raise
        items, _ = await self.client.list(CONFIGMAPS, ns, labels=dict(MANAGED_BY_OPERATOR))
        prefix = f"{self.config.configmap}-part-"
        self.parts = {
            item["metadata"]["name"]
            for item in items
            if item["metadata"]["name"].startswith(prefix)
        }

    async def publish_table(self, document: dict[str, Any]) -> bool:
        packed = await asyncio.to_thread(
            bundle.pack,
            document,
            lambda i: f"{self.config.configmap}-part-{i}",
            lambda doc: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
        )
        if packed.checksum == self.published:
            return False

        def meta(name: str) -> dict[str, Any]:
            return self._metadata(name, annotations={CHECKSUM_ANNOTATION: packed.checksum})

        # Parts first, index last: a reader following the index never sees a
        # half-written table (and checks the parts' checksum anyway).
        for name, files in packed.parts.items():
            await self.client.upsert(
                CONFIGMAPS,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": meta(name),
                    "binaryData": {k: base64.b64encode(v).decode() for k, v in files.items()},
                },
            )
        await self.client.upsert(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(self.config.configmap),
                "data": packed.data,
                "binaryData": {k: base64.b64encode(v).decode() for k, v in packed.binary.items()},
            },
        )
        for stale in self.parts - set(packed.parts):
            try:
                await self.client.delete(CONFIGMAPS, stale, self.config.namespace)
            except KubeError as exc:
                if exc.status != 404:
                    raise
        self.parts = set(packed.parts)
        self.published = packed.checksum
        log.info(
            "published the routing table (sha256 %s, %d part(s))",
            packed.checksum[:12],
            max(1, len(packed.parts)),
        )
        return True

    async def publish_keys(self, keys: dict[str, str]) -> bool:
        digest = hashlib.sha256(orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if digest == self.keys_digest:
            return False
        await self.client.upsert(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": self._metadata(self.config.keys_secret),
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(keys.items())},
            },
        )
        self.keys_digest = digest
        return True

    async def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``obj``; failing to post one never fails the caller."""
        meta = obj["metadata"]
        stamp = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "switchyard-operator"},
            "reportingComponent": "switchyard.dev/operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.create(EVENTS, body)
        except (KubeError, OSError) as exc:
            log.warning(
                "posting event %s on %s/%s failed: %s",
                reason,
                meta["namespace"],
                meta["name"],
                exc,
            )

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        try:
            await self.client.merge_patch(
                _BY_PLURAL[plural], name, namespace, {"status": status}, status=True
            )
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile
                raise
