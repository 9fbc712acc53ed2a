"""The table's cluster-wide sections (routing, cache, budgets) as the operator reads them
from its settings ConfigMap, validated with the table's own schema."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from switchyard.router.contract import Budget, CacheSettings, RoutingSettings

_SECTIONS: dict[str, TypeAdapter[Any]] = {
    "routing": TypeAdapter(RoutingSettings),
    "cache": TypeAdapter(CacheSettings),
    "budgets": TypeAdapter(list[Budget]),
}


def parse_settings(text: str) -> dict[str, Any]:
    """The sections present, as plain data; ValueError names what is wrong."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"settings.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("settings.yaml must be a mapping of routing, cache and budgets")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ValueError(
            f"unknown sections: {', '.join(unknown)} (allowed: routing, cache, budgets)"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            model = _SECTIONS[key].validate_python(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{key}{'.' + where if where else ''}: {err['msg']}") from None
        out[key] = _SECTIONS[key].dump_python(
            model, by_alias=True, exclude_defaults=True, mode="json"
        )
    return out
