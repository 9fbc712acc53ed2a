"""What the operator knows of the cluster, kept from watch events: its index.

Every LLMProvider, LLMModel, PromptTemplate and API-key Secret is held here as
its latest body, so compiling the routing table needs no API call per object.
Provider keys are read from the Secrets the providers reference.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from switchyard.router.contract import MODEL, PROVIDER, TEMPLATE

Key = tuple[str, str]  # namespace, name


@dataclass
class Obj:
    namespace: str
    name: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]
    uid: str


def obj_of(body: Mapping[str, Any]) -> Obj:
    meta = body.get("metadata") or {}
    return Obj(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
        annotations=dict(meta.get("annotations") or {}),
        uid=meta.get("uid", ""),
    )


@dataclass
class ClusterState:
    providers: dict[Key, Obj] = field(default_factory=dict)
    models: dict[Key, Obj] = field(default_factory=dict)
    templates: dict[Key, Obj] = field(default_factory=dict)
    api_keys: dict[Key, dict[str, str]] = field(default_factory=dict)  # decoded Secret data
    secrets: dict[Key, dict[str, str]] = field(default_factory=dict)  # referenced Secrets
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    # The table's routing, cache and budgets sections, from the settings ConfigMap.
    settings: dict[str, Any] = field(default_factory=dict)
    # Objects the start-up listing found that no watch event has confirmed yet.
    unconfirmed: set[tuple[str, Key]] = field(default_factory=set)

    def snapshot(self) -> ClusterState:
        """A copy to compile from in a thread while watch events keep changing this one."""
        return ClusterState(
            providers={k: replace(v, status=dict(v.status)) for k, v in self.providers.items()},
            models=dict(self.models),
            templates=dict(self.templates),
            api_keys=dict(self.api_keys),
            secrets=dict(self.secrets),
            settings=dict(self.settings),
        )

    def referenced_secrets(self) -> set[Key]:
        return {
            (p.namespace, str(p.spec["apiKeySecretRef"]["name"]))
            for p in self.providers.values()
            if p.spec.get("apiKeySecretRef")
        }

    def provider_key(self, p: Obj) -> tuple[str | None, str | None]:
        """The provider's API key, or why there is none."""
        ref = p.spec.get("apiKeySecretRef")
        if not ref:
            return None, None
        name, key = str(ref.get("name")), str(ref.get("key") or "apiKey")
        data = self.secrets.get((p.namespace, name))
        if data is None:
            return None, f"Secret {name} does not exist"
        value = data.get(key)
        if not value:
            return None, f"Secret {name} has no key {key!r}"
        return value, None

    def record(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Apply one watch event; mark the table for recompilation."""
        o = obj_of(body)
        key = (o.namespace, o.name)
        self.unconfirmed.discard((kind, key))
        store: dict[Key, Obj] = {
            PROVIDER.plural: self.providers,
            MODEL.plural: self.models,
            TEMPLATE.plural: self.templates,
        }[kind]
        old = store.get(key)
        if event_type == "DELETED":
            store.pop(key, None)
        else:
            store[key] = o
        # Status writes come back as events; only what the table holds matters.
        if (
            old is None
            or event_type == "DELETED"
            or old.spec != o.spec
            or old.status.get("health") != o.status.get("health")
        ):
            self.dirty.set()

    def drop_unconfirmed(self) -> int:
        """Forget what the start-up listing found but the watch never showed: it was
        deleted in between."""
        stores: dict[str, dict[Key, Obj]] = {
            PROVIDER.plural: self.providers,
            MODEL.plural: self.models,
            TEMPLATE.plural: self.templates,
        }
        dropped = 0
        for kind, key in self.unconfirmed:
            if stores[kind].pop(key, None) is not None:
                dropped += 1
        self.unconfirmed.clear()
        if dropped:
            self.dirty.set()
        return dropped

    def record_secret(
        self, event_type: str | None, body: Mapping[str, Any], api_key_label: str
    ) -> bool:
        """Apply a Secret event; True when it matters to the routing table."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        deleted = event_type == "DELETED"
        data = (
            {}
            if deleted
            else {
                k: base64.b64decode(v).decode("utf-8", "replace").strip()
                for k, v in (body.get("data") or {}).items()
            }
        )
        relevant = False
        if api_key_label in (meta.get("labels") or {}) or key in self.api_keys:
            relevant = True
            if deleted or api_key_label not in (meta.get("labels") or {}):
                self.api_keys.pop(key, None)
            else:
                self.api_keys[key] = data
        # Keep every Secret a provider references (or may, once it is created).
        if key in self.referenced_secrets() or key in self.secrets:
            relevant = True
            if deleted:
                self.secrets.pop(key, None)
            else:
                self.secrets[key] = data
        if relevant:
            self.dirty.set()
        return relevant
