"""Compile the cluster's objects into one routing table, and say what was left out.

The result is always a table the router accepts: an object that would make it
invalid (a model whose provider is missing, a template whose variables do not
match) is left out, and its status says why. Serialization is deterministic,
so an unchanged cluster compiles to the same checksum and nothing is written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from switchyard.operator.state import ClusterState, Key, Obj
from switchyard.router.contract import (
    API_VERSION,
    KIND,
    MODEL,
    PROVIDER,
    TEMPLATE,
    placeholders,
)
from switchyard.router.errors import ConfigError
from switchyard.router.table.loader import parse_document

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SCOPES = ("completion", "usage:read", "settings:write")

#: Provider spec fields copied as they are into the routing table.
_PROVIDER_FIELDS = (
    "providerType",
    "baseUrl",
    "apiVersion",
    "priority",
    "isDefault",
    "isEnabled",
    "rateLimits",
    "timeouts",
    "maxConnections",
    "endpoints",
)
_MODEL_FIELDS = (
    "modelName",
    "displayName",
    "contextWindow",
    "maxOutputTokens",
    "modelType",
    "supportsFunctionCalling",
    "supportsStreaming",
    "supportsStructuredOutput",
    "supportsLogprobs",
    "supportsVision",
    "inputPricePer1MTokens",
    "outputPricePer1MTokens",
    "avgLatencyMs",
    "tokensPerSecond",
    "bestFor",
    "isEnabled",
)


@dataclass(frozen=True)
class Verdict:
    """What the compiler concluded about one object: its Ready condition."""

    ready: bool
    reason: str
    message: str


@dataclass
class Compiled:
    document: dict[str, Any]
    provider_keys: dict[str, str]  # secretKey -> API key
    verdicts: dict[tuple[str, Key], Verdict] = field(default_factory=dict)
    api_key_problems: dict[Key, str] = field(default_factory=dict)
    # Which object each entry of the document's lists came from.
    sources: dict[str, list[tuple[str, Key]]] = field(default_factory=dict)
    # Providers whose serviceRef gives no endpoints, or more than the table holds.
    endpoint_problems: dict[Key, str] = field(default_factory=dict)


def secret_key_name(namespace: str, name: str) -> str:
    """The provider's key in the keys Secret: readable when short enough for one."""
    plain = f"{namespace}.{name}"
    if len(plain) <= 253:
        return plain
    return "k-" + hashlib.sha256(plain.encode()).hexdigest()


def _pick(spec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: spec[f] for f in fields if spec.get(f) is not None}


def compile_state(
    state: ClusterState, rejected: dict[tuple[str, Key], str] | None = None
) -> Compiled:
    """The table; ``rejected`` names objects to leave out (with why), when a first
    attempt produced a table the router refused."""
    rejected = rejected or {}
    sources: dict[str, list[tuple[str, Key]]] = {
        "providers": [],
        "models": [],
        "templates": [],
        "apiKeys": [],
    }
    providers: list[dict[str, Any]] = []
    keys: dict[str, str] = {}
    verdicts: dict[tuple[str, Key], Verdict] = {}
    endpoint_problems: dict[Key, str] = {}
    for (ns, name), p in sorted(state.providers.items()):
        if (why := rejected.get((PROVIDER.plural, (ns, name)))) is not None:
            verdicts[(PROVIDER.plural, (ns, name))] = Verdict(False, "RejectedByRouter", why)
            continue
        sources["providers"].append((PROVIDER.plural, (ns, name)))
        entry = {"name": name, "organization": ns, **_pick(p.spec, _PROVIDER_FIELDS)}
        if p.spec.get("serviceRef"):
            # Its Service's ready pods; none ready: its baseUrl, the Service itself.
            endpoints, problem = state.endpoints_of(p)
            if endpoints:
                entry["endpoints"] = endpoints
            if problem:
                endpoint_problems[(ns, name)] = problem
        health = p.status.get("health")
        if health in ("healthy", "degraded", "unhealthy", "unknown"):
            entry["healthStatus"] = health
        if p.spec.get("apiKeySecretRef"):
            entry["apiKey"] = {"secretKey": secret_key_name(ns, name)}
            value, problem = state.provider_key(p)
            if value is not None:
                keys[secret_key_name(ns, name)] = value
            verdicts[(PROVIDER.plural, (ns, name))] = (
                Verdict(False, "ApiKeyMissing", problem) if problem else _ready_provider(p)
            )
        else:
            verdicts[(PROVIDER.plural, (ns, name))] = _ready_provider(p)
        providers.append(entry)
    provider_names = {(p["organization"], p["name"]) for p in providers}

    models: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], str] = {}
    for (ns, obj_name), m in sorted(state.models.items()):
        spec = m.spec
        name = str(spec.get("name") or obj_name)
        provider = str((spec.get("providerRef") or {}).get("name", ""))
        vkey = (MODEL.plural, (ns, obj_name))
        if (why := rejected.get(vkey)) is not None:
            verdicts[vkey] = Verdict(False, "RejectedByRouter", why)
            continue
        if (ns, provider) not in provider_names:
            verdicts[vkey] = Verdict(
                False, "ProviderNotFound", f"no LLMProvider {provider!r} in namespace {ns}"
            )
            continue
        if (ns, name, provider) in seen:
            verdicts[vkey] = Verdict(
                False,
                "Duplicate",
                f"LLMModel {seen[(ns, name, provider)]} already serves {name!r} on {provider!r}",
            )
            continue
        seen[(ns, name, provider)] = obj_name
        sources["models"].append(vkey)
        models.append(
            {
                "name": name,
                "organization": ns,
                "provider": provider,
                "objectName": obj_name,
                **_pick(spec, _MODEL_FIELDS),
            }
        )
        verdicts[vkey] = Verdict(True, "Compiled", f"served as {name!r} by {provider!r}")
    model_names = {(m["organization"], m["name"]) for m in models}

    templates: list[dict[str, Any]] = []
    for (ns, name), t in sorted(state.templates.items()):
        spec = t.spec
        vkey = (TEMPLATE.plural, (ns, name))
        if (why := rejected.get(vkey)) is not None:
            verdicts[vkey] = Verdict(False, "RejectedByRouter", why)
            continue
        text = str(spec.get("template", ""))
        overrides = list(spec.get("modelOverrides") or [])
        # Overrides for models that do not exist (yet) are left out, so the
        # variables must match what is kept.
        kept = [o for o in overrides if (ns, o.get("model")) in model_names]
        used = set(placeholders(text)).union(
            *(placeholders(str(o.get("template", ""))) for o in kept)
        )
        declared = spec.get("variables")
        if declared is not None and set(declared) != used:
            missing, extra = sorted(used - set(declared)), sorted(set(declared) - used)
            parts = ([f"undeclared: {', '.join(missing)}"] if missing else []) + (
                [f"never used: {', '.join(extra)}"] if extra else []
            )
            verdicts[vkey] = Verdict(
                False,
                "VariablesMismatch",
                "variables do not match the placeholders (" + "; ".join(parts) + ")",
            )
            continue
        tpl: dict[str, Any] = {"name": name, "organization": ns, "template": text}
        for f in ("description", "taskType", "variables"):
            if spec.get(f) is not None:
                tpl[f] = spec[f]
        if kept:
            tpl["modelOverrides"] = [{"model": o["model"], "template": o["template"]} for o in kept]
        templates.append(tpl)
        sources["templates"].append(vkey)
        dropped = sorted(str(o.get("model")) for o in overrides if o not in kept)
        verdicts[vkey] = Verdict(
            True,
            "Compiled",
            f"overrides for unknown models ignored: {', '.join(dropped)}"
            if dropped
            else f"placeholders: {', '.join(sorted(used)) or 'none'}",
        )

    api_keys: list[dict[str, Any]] = []
    problems: dict[Key, str] = {}
    hashes: set[str] = set()
    for (ns, name), data in sorted(state.api_keys.items()):
        digest = data.get("sha256", "").lower()
        scopes = [s for s in re.split(r"[\s,]+", data.get("scopes", "completion")) if s]
        if not _HEX64.match(digest):
            problems[(ns, name)] = "data.sha256 must be 64 hex digits"
            continue
        if bad := [s for s in scopes if s not in _SCOPES]:
            problems[(ns, name)] = f"unknown scopes: {', '.join(bad)}"
            continue
        if digest in hashes:
            problems[(ns, name)] = "another API key has the same hash"
            continue
        hashes.add(digest)
        sources["apiKeys"].append(("secrets", (ns, name)))
        api_keys.append(
            {"name": name, "organization": ns, "sha256": digest, "scopes": scopes or ["completion"]}
        )

    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "providers": providers,
        "models": models,
        "templates": templates,
        "apiKeys": api_keys,
        **{k: v for k, v in state.settings.items() if k != "budgets"},
    }
    # A budget for a key that does not exist (yet) waits for it, like an override.
    key_names = {(k["organization"], k["name"]) for k in api_keys}
    budgets = [
        b
        for b in state.settings.get("budgets", [])
        if b.get("apiKey") is None or (b.get("organization", "default"), b["apiKey"]) in key_names
    ]
    if budgets:
        document["budgets"] = budgets
    return Compiled(document, keys, verdicts, problems, sources, endpoint_problems)


def _ready_provider(p: Obj) -> Verdict:
    health = p.status.get("health", "unknown")
    if health == "unhealthy":
        return Verdict(False, "Unhealthy", str(p.status.get("message") or "health checks fail"))
    return Verdict(True, "Compiled", f"health {health}")


def validate(document: dict[str, Any]) -> str | None:
    """The router's own validation of a compiled table."""
    try:
        parse_document(document)
    except ConfigError as exc:
        return str(exc)
    return None


_ENTRY = re.compile(r"^(providers|models|templates|apiKeys)\[(\d+)\]")


def compile_valid(state: ClusterState, attempts: int = 50) -> tuple[Compiled, str | None]:
    """Compile, and leave out each object the router's validation refuses, until the
    table passes: one bad object must never hold back the whole cluster's table.

    Returns the table and, when it still fails (a bug), the validation error.
    """
    rejected: dict[tuple[str, Key], str] = {}
    compiled = compile_state(state)
    for _ in range(attempts):
        try:
            parse_document(compiled.document)
            return compiled, None
        except ConfigError as exc:
            match = _ENTRY.match(exc.path or "")
            if match is None:
                return compiled, str(exc)
            source = compiled.sources[match.group(1)][int(match.group(2))]
            if source[0] == "secrets":
                compiled.api_key_problems[source[1]] = exc.reason
                state_key = source[1]
                state.api_keys.pop(state_key, None)  # unusable until it changes
            else:
                rejected[source] = f"the router refuses it: {exc}"
            compiled = compile_state(state, rejected)
    return compiled, "too many objects refused by the router's validation"
