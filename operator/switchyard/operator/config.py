"""The operator's settings: where it publishes the routing table and the provider keys."""

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

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            namespace=os.environ.get("SWITCHYARD_NAMESPACE", cls.namespace),
            configmap=os.environ.get("SWITCHYARD_ROUTING_CONFIGMAP", cls.configmap),
            keys_secret=os.environ.get("SWITCHYARD_PROVIDER_KEYS_SECRET", cls.keys_secret),
            settings_configmap=os.environ.get(
                "SWITCHYARD_SETTINGS_CONFIGMAP", cls.settings_configmap
            ),
        )
