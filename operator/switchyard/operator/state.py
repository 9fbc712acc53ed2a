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

from switchyard.router.contract import MAX_ENDPOINTS, MODEL, PROVIDER, TEMPLATE

Key = tuple[str, str]  # namespace, name

#: The label an EndpointSlice names its Service with.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Slice:
    """What the table needs of one EndpointSlice: its Service, ports and ready addresses."""

    service: str
    ports: tuple[tuple[str, int], ...]  # (name, port the pods listen on)
    addresses: tuple[str, ...]  # ready ones only, as host (IPv6 in brackets)


def slice_of(body: Mapping[str, Any]) -> Slice:
    meta = body.get("metadata") or {}
    service = str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
    ports = tuple(
        (str(p.get("name") or ""), int(p["port"]))
        for p in body.get("ports") or []
        if isinstance(p, Mapping) and p.get("port") and p.get("protocol", "TCP") == "TCP"
    )
    v6 = body.get("addressType") == "IPv6"
    addresses: list[str] = []
    for ep in body.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        # "ready" unset means ready (the API's rule); a terminating pod is not ready.
        if conditions.get("ready") is False:
            continue
        addresses += [f"[{a}]" if v6 else str(a) for a in ep.get("addresses") or []][:1]
    return Slice(service, ports, tuple(addresses))


def slice_port(s: Slice, wanted: str | int | None) -> int | None:
    """The port this slice's pods listen on for ``wanted``: a Service port's name, or
    the pods' number; None for a Service with one port. Each slice says it for its own
    pods (a named targetPort may be a different number on each)."""
    for name, port in s.ports:
        if wanted is None or wanted in (name, port):
            return port
    return None


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
    # Every EndpointSlice, by (namespace, slice name): what serviceRefs resolve to.
    slices: dict[Key, Slice] = field(default_factory=dict)

    def snapshot(self) -> ClusterState:
        """A copy to compile from in a thread while watch events keep changing this one."""
        return ClusterState(
            providers={k: replace(v, status=dict(v.status)) for k, v in self.providers.items()},
            models=dict(self.models),
            templates=dict(self.templates),
            api_keys=dict(self.api_keys),
            secrets=dict(self.secrets),
            settings=dict(self.settings),
            slices=dict(self.slices),
        )

    def referenced_services(self) -> set[Key]:
        return {
            (p.namespace, str(p.spec["serviceRef"].get("name")))
            for p in self.providers.values()
            if isinstance(p.spec.get("serviceRef"), Mapping)
        }

    def record_slice(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply an EndpointSlice event; True (and the table is to be compiled again)
        when a provider's serviceRef names its Service and its endpoints changed."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self.slices.get(key)
        new = None if event_type == "DELETED" else slice_of(body)
        if new is None:
            self.slices.pop(key, None)
        else:
            self.slices[key] = new
        if old == new:
            return False
        services = self.referenced_services()
        relevant = any(s is not None and (key[0], s.service) in services for s in (old, new))
        if relevant:
            self.dirty.set()
        return relevant

    def endpoints_of(self, p: Obj) -> tuple[list[str], str | None]:
        """The ready pods of the provider's serviceRef as ``host:port``, sorted; and what
        is wrong, if anything (no such port; more than the table holds)."""
        ref = p.spec.get("serviceRef")
        if not isinstance(ref, Mapping):
            return [], None
        name = str(ref.get("name"))
        slices = [
            s
            for (ns, _), s in sorted(self.slices.items())
            if ns == p.namespace and s.service == name
        ]
        wanted = ref.get("port")
        found = sorted(
            {
                f"{a}:{port}"
                for s in slices
                if (port := slice_port(s, wanted)) is not None
                for a in s.addresses
            }
        )
        if not found:
            if any(s.addresses for s in slices) and wanted is not None:
                return [], f"Service {name} has no port {wanted!r}"
            return [], f"Service {name} has no ready endpoints"
        if len(found) > MAX_ENDPOINTS:
            return found[:MAX_ENDPOINTS], (
                f"Service {name} has {len(found)} ready endpoints; "
                f"the first {MAX_ENDPOINTS} are used"
            )
        return found, None

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
