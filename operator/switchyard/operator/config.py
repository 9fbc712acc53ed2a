"""The operator's settings: where it publishes the routing table and the provider keys,
and which namespaces (organizations) it serves."""

from __future__ import annotations

import os
from dataclasses import dataclass

from switchyard.router.contract import (
    DEFAULT_KEYS_SECRET,
    DEFAULT_NAMESPACE,
    DEFAULT_ROUTING_CONFIGMAP,
    DEFAULT_SETTINGS_CONFIGMAP,
)


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = DEFAULT_NAMESPACE  # where the ConfigMap and the keys Secret live
    configmap: str = DEFAULT_ROUTING_CONFIGMAP
    keys_secret: str = DEFAULT_KEYS_SECRET
    settings_configmap: str = DEFAULT_SETTINGS_CONFIGMAP  # routing, cache and budgets
    debounce_seconds: float = 0.2
    #: The organizations' namespaces it watches (objects, API keys, provider keys);
    #: empty: every namespace, which needs cluster-wide read access to Secrets.
    watch_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            namespace=os.environ.get("SWITCHYARD_NAMESPACE", cls.namespace),
            configmap=os.environ.get("SWITCHYARD_ROUTING_CONFIGMAP", cls.configmap),
            keys_secret=os.environ.get("SWITCHYARD_PROVIDER_KEYS_SECRET", cls.keys_secret),
            settings_configmap=os.environ.get(
                "SWITCHYARD_SETTINGS_CONFIGMAP", cls.settings_configmap
            ),
            watch_namespaces=namespaces(os.environ.get("SWITCHYARD_WATCH_NAMESPACES", "")),
        )


def namespaces(text: str) -> tuple[str, ...]:
    """A comma-separated list of namespaces, each once, in the order given."""
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
