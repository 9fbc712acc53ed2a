"""Read a routing-table document, validate it whole, and say exactly what is wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from switchyard.router.contract import CLOUD_TYPES, EMBEDDING_TYPES, RoutingTable
from switchyard.router.errors import ConfigError

#: libyaml's safe loader when PyYAML was built with it: several times faster.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _first_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    lines = []
    for err in errors:
        # Drop pydantic's tagged-union and validator-function segments from the path.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{_path(loc) or '(document)'}: {msg}")
    first = errors[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    message = "; ".join(lines[:10]) + (f" (and {len(lines) - 10} more)" if len(lines) > 10 else "")
    error = ConfigError(message)
    error.path = _path(loc)
    return error


def parse_document(data: Any) -> RoutingTable:
    """Validate a parsed document and the references between its parts."""
    if not isinstance(data, dict):
        raise ConfigError("the routing table must be a mapping (apiVersion, kind, providers, ...)")
    try:
        table = RoutingTable.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    check_references(table)
    return table


def check_references(table: RoutingTable) -> None:
    """Names unique within an organization; every reference resolves."""
    providers: dict[tuple[str, str], str] = {}
    for i, p in enumerate(table.providers):
        key = (p.organization, p.name)
        if key in providers:
            raise ConfigError(
                f"duplicate provider name {p.name!r} in organization {p.organization!r}",
                f"providers[{i}].name",
            )
        providers[key] = p.provider_type
        if p.provider_type in CLOUD_TYPES and p.api_key is None:
            raise ConfigError(
                f"providerType {p.provider_type} needs an apiKey reference",
                f"providers[{i}].apiKey",
            )
    seen_models: set[tuple[str, str, str]] = set()
    for i, m in enumerate(table.models):
        if (m.organization, m.provider) not in providers:
            raise ConfigError(
                f"unknown provider {m.provider!r} in organization {m.organization!r}",
                f"models[{i}].provider",
            )
        key3 = (m.organization, m.name, m.provider)
        if key3 in seen_models:
            raise ConfigError(
                f"model {m.name!r} is declared twice for provider {m.provider!r}",
                f"models[{i}].name",
            )
        seen_models.add(key3)
        kind = providers[(m.organization, m.provider)]
        if m.model_type == "embedding" and kind not in EMBEDDING_TYPES:
            raise ConfigError(
                f"providerType {kind} has no embeddings API (embedding models: "
                f"{', '.join(sorted(EMBEDDING_TYPES))})",
                f"models[{i}].modelType",
            )
    model_names = {(m.organization, m.name) for m in table.models}
    templates: set[tuple[str, str]] = set()
    for i, t in enumerate(table.templates):
        if (t.organization, t.name) in templates:
            raise ConfigError(f"duplicate template name {t.name!r}", f"templates[{i}].name")
        templates.add((t.organization, t.name))
        for j, o in enumerate(t.model_overrides):
            if (t.organization, o.model) not in model_names:
                raise ConfigError(
                    f"override for unknown model {o.model!r}",
                    f"templates[{i}].modelOverrides[{j}].model",
                )
    hashes: set[str] = set()
    names: set[tuple[str, str]] = set()
    keys_by_org = {(k.organization, k.name) for k in table.api_keys}
    budgets: set[tuple[str, str | None]] = set()
    for i, b in enumerate(table.budgets):
        if b.api_key is not None and (b.organization, b.api_key) not in keys_by_org:
            raise ConfigError(
                f"no API key {b.api_key!r} in organization {b.organization!r}",
                f"budgets[{i}].apiKey",
            )
        if (b.organization, b.api_key) in budgets:
            raise ConfigError("a second budget for the same subject", f"budgets[{i}]")
        budgets.add((b.organization, b.api_key))
    for i, k in enumerate(table.api_keys):
        if k.sha256 in hashes:
            raise ConfigError("two API keys have the same hash", f"apiKeys[{i}].sha256")
        if (k.organization, k.name) in names:
            raise ConfigError(f"duplicate API key name {k.name!r}", f"apiKeys[{i}].name")
        hashes.add(k.sha256)
        names.add((k.organization, k.name))


def checksum_of(data: Any) -> str:
    """SHA-256 of the document's canonical JSON: the operator's checksum, in any form."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_bytes(raw: bytes, source: str = "<table>") -> tuple[RoutingTable, str]:
    """Parse YAML or JSON bytes; return the table and its checksum."""
    if raw.lstrip()[:1] == b"{":
        # JSON (the operator's packed form): orjson reads 10,000 models in milliseconds
        # where a YAML parser takes seconds.
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON: {exc}") from None
        return parse_document(data), checksum_of(data)
    try:
        data = yaml.load(raw, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{source} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_document(data), checksum_of(data)


def load_file(path: str | Path) -> tuple[RoutingTable, str]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    return load_bytes(raw, str(p))
