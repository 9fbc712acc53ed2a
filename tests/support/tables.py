"""Routing tables for tests, built as plain documents."""

from __future__ import annotations

import hashlib
from typing import Any

KEY = "sy-test-key-0123456789"
READONLY_KEY = "sy-test-readonly-key"
OTHER_ORG_KEY = "sy-test-other-org-key"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_keys() -> list[dict[str, Any]]:
    return [
        {
            "name": "test",
            "sha256": sha(KEY),
            "organization": "default",
            "scopes": ["completion", "usage:read", "settings:write"],
        },
        {"name": "readonly", "sha256": sha(READONLY_KEY), "scopes": ["usage:read"]},
        {
            "name": "other",
            "sha256": sha(OTHER_ORG_KEY),
            "organization": "other",
            "scopes": ["completion", "settings:write"],
        },
    ]


def provider(
    name: str,
    provider_type: str,
    base_url: str,
    *,
    key_env: str | None = None,
    priority: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "providerType": provider_type,
        "baseUrl": base_url,
        "priority": priority,
    }
    if key_env:
        p["apiKey"] = {"env": key_env}
    p.update(extra)
    return p


def model(
    name: str, provider_name: str, model_name: str | None = None, **extra: Any
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": name,
        "provider": provider_name,
        "modelName": model_name or name,
        "contextWindow": 32000,
        "maxOutputTokens": 4096,
        "inputPricePer1MTokens": "1.00",
        "outputPricePer1MTokens": "2.00",
        "supportsFunctionCalling": True,
        "supportsStructuredOutput": True,
        "supportsLogprobs": True,
        "supportsVision": True,
    }
    m.update(extra)
    return m


def table(
    providers: list[dict[str, Any]],
    models: list[dict[str, Any]],
    *,
    templates: list[dict[str, Any]] | None = None,
    routing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "RoutingTable",
        "providers": providers,
        "models": models,
        "templates": templates or [],
        "apiKeys": api_keys(),
    }
    # The fakes of cloud providers listen on loopback, which a cloud provider type may
    # not reach unless the table allows it; tests of that policy say otherwise.
    doc["routing"] = {"providerNetworks": {"allowCIDRs": LOOPBACK}, **(routing or {})}
    return doc


#: What test tables let every provider type reach: the fakes' loopback.
LOOPBACK = ["127.0.0.0/8"]
