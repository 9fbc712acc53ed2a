"""Providers, health checks and templates: ``/api/v1/llm/...``."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.adapter import ProbeResult
from switchyard.router.core.breaker import BreakerState
from switchyard.router.core.catalog import provider_key
from switchyard.router.core.templates import render, template_text, variables_of
from switchyard.router.errors import NotFound
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.services import Services, services

_BREAKER = {0: "closed", 1: "open", 2: "half_open"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _probe_json(p: ProbeResult | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "status": p.status,
        "latencyMs": None if p.latency_ms is None else round(p.latency_ms, 3),
        "checkedAt": p.checked_at,
        "message": p.message,
        "models": p.models,
        "missingModels": p.missing,
        "addressRefused": p.refused,
    }


def provider_views(s: Services, organization: str) -> list[dict[str, Any]]:
    """The organization's providers as they stand right now: what the providers API and
    the console show."""
    org = s.gateway.require_catalog().org(organization)
    out = []
    for name, p in sorted(org.providers.items()):
        state = s.gateway.states.get(provider_key(p))
        probe = state.last_probe
        # Models out on their own (not found, or unable to do what was asked), while the
        # provider serves its others, and why each went.
        out_reasons = {
            m.name: state.models_out.get(m.model_name, "")
            for m in org.all_models
            if m.provider == name
            and (b := state.models.get(m.model_name)) is not None
            and b.state == BreakerState.OPEN
        }
        out.append(
            {
                "name": name,
                "providerType": p.provider_type,
                "baseUrl": p.display_url,
                "priority": p.priority,
                "isDefault": p.is_default,
                "isEnabled": p.is_enabled,
                "rateLimits": p.rate_limits.model_dump(by_alias=True),
                # Live: an open breaker or a key that cannot be read outweighs any
                # probe, which may be older than the outage.
                "healthStatus": "unhealthy"
                if state.key_problem or state.refused or state.breaker.state == BreakerState.OPEN
                else (probe.status if probe else p.health_status),
                "lastHealthCheck": _probe_json(probe),
                "circuitBreaker": _BREAKER[int(state.breaker.state)],
                "consecutiveFailures": state.breaker.consecutive_failures,
                "lastFailure": state.last_failure,
                "apiKeyProblem": state.key_problem,
                "refused": state.refused,
                "models": sorted(m.name for m in org.all_models if m.provider == name),
                "modelsOut": sorted(out_reasons),
                "modelsOutReasons": out_reasons,
                # Its replicas, when it has several (``core.balance``).
                "endpoints": s.gateway.endpoint_views(provider_key(p)),
            }
        )
    return out


async def list_providers(request: Request) -> Response:
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "completion")
    return _json({"providers": provider_views(s, caller.organization)})


async def health_check(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "settings:write")
    name = request.path_params["name"]
    if s.kube is not None:
        # In a cluster the operator owns health: ask it for a fresh probe.
        from switchyard.router.http.cluster_api import operator_probe

        return _json(await operator_probe(s.kube, caller.organization, name))
    result = await s.gateway.probe(caller.organization, name)
    return _json({"provider": name, **(_probe_json(result) or {})})


async def list_templates(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    out = [
        {
            "name": t.name,
            "description": t.description,
            "taskType": t.task_type,
            "variables": variables_of(t),
            "template": t.template,
            "modelOverrides": [o.model for o in t.model_overrides],
        }
        for _, t in sorted(catalog.org(caller.organization).templates.items())
    ]
    return _json({"templates": out})


class RenderBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    template: str = Field(min_length=1, max_length=253)
    variables: dict[str, str] = Field(default_factory=dict)
    model: str | None = Field(default=None, min_length=1, max_length=253)


async def render_template(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    body = validate(RenderBody, await read_json(request, catalog.settings.max_body_bytes))
    template = catalog.org(caller.organization).templates.get(body.template)
    if template is None:
        raise NotFound(f"template {body.template!r} does not exist", field="template")
    text = render(template, body.variables, body.model)
    overridden = template_text(template, body.model) is not template.template
    return _json(
        {
            "template": template.name,
            "model": body.model,
            "modelOverride": overridden,
            "rendered": text,
            "variables": variables_of(template),
        }
    )
