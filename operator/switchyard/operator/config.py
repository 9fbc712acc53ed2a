"""The operator's settings: where it publishes the routing table and the provider keys."""

from __future__ import annotations

import os
from dataclasses import dataclass

GROUP = "switchyard.dev"
VERSION = "v1alpha1"
API_KEY_LABEL = "switchyard.dev/api-key"
PROBE_ANNOTATION = "switchyard.dev/probe-requested-at"
CHECKSUM_ANNOTATION = "switchyard.dev/checksum"
MANAGED_BY = {"app.kubernetes.io/managed-by": "switchyard-operator"}


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "switchyard"  # where the ConfigMap and the keys Secret live
    configmap: str = "switchyard-routing"
    keys_secret: str = "switchyard-provider-keys"
    settings_configmap: str = "switchyard-settings"  # routing, cache and budgets
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
