"""What the router does through the Kubernetes API when it follows a cluster.

``POST /api/v1/llm/providers`` creates an LLMProvider (and a Secret for its
key) in the caller's namespace, which is its organization; the operator then
validates, probes and compiles it like any other. A health check asks the
operator for a fresh probe through an annotation and reports the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.contract import (
    API_VERSION,
    CREATED_BY_ROUTER,
    PROBE_ANNOTATION,
    PROVIDER,
    ProviderType,
    base_url_shape,
    networks,
    url_refusal,
)
from switchyard.router.errors import (
    BadRequest,
    ClusterUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    NotInCluster,
    SwitchyardError,
    UpstreamTimeout,
)
from switchyard.router.http.auth import authenticate
from switchyard.router.http.body import read_json, validate
from switchyard.router.http.services import services
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.resources import LLM_PROVIDERS, SECRETS
from switchyard.router.protocols.shared import Integral

if TYPE_CHECKING:
    from switchyard.router.kube.client import KubeClient


class _Strict(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class RateLimitsBody(_Strict):
    requests_per_minute: Annotated[int, Field(ge=1, le=1_000_000_000), Integral] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1, le=1_000_000_000_000), Integral] | None = None


class NewProvider(_Strict):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    provider_type: ProviderType
    base_url: (
        Annotated[
            str,
            Field(max_length=2048, pattern=r"^https?://[^\s?#@]+$"),
            AfterValidator(base_url_shape),
        ]
        | None
    ) = None
    api_key: str | None = Field(default=None, min_length=1, max_length=4096)
    api_version: str | None = Field(default=None, max_length=64)
    priority: Annotated[int, Field(ge=0, le=1_000_000), Integral] = 100
    is_default: bool = False
    is_enabled: bool = True
    rate_limits: RateLimitsBody | None = None


def _kube_error(exc: KubeError, what: str, namespace: str) -> SwitchyardError:
    """What the Kubernetes API answered: a 4xx naming what was refused, or a 503 when the
    API server failed; never a 500."""
    if exc.status == 409:
        return Conflict(f"{what} already exists")
    if exc.status in (400, 422):
        # The API server's validation message names the field (CEL rules included),
        # after the object's name: 'LLMProvider.switchyard.dev "x" is invalid: spec...'.
        return BadRequest(exc.detail.split(": ", 1)[-1] or str(exc))
    if exc.status == 404:
        return NotFound(f"{what} does not exist")
    if exc.status == 403:
        # The chart binds the router's settings role in router.settingsNamespaces only.
        return Forbidden(
            f"this router may not change settings in namespace {namespace!r} ({what}): "
            "it is not one of the namespaces its role is bound in (router.settingsNamespaces)"
        )
    return ClusterUnavailable(f"the Kubernetes API failed on {what}: {exc}")


async def create_provider(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "settings:write")
    if s.kube is None:
        raise NotInCluster(
            "this router serves a routing-table file; add providers to the file instead",
            allow="GET",
        )
    body = validate(NewProvider, await read_json(request, catalog.settings.max_body_bytes))
    ns = caller.organization
    spec: dict[str, Any] = {
        "providerType": body.provider_type,
        "priority": body.priority,
        "isDefault": body.is_default,
        "isEnabled": body.is_enabled,
    }
    if body.base_url:
        allowed = networks(catalog.settings.provider_networks.allow_cidrs)
        refused = url_refusal(body.provider_type, body.base_url, allowed)
        if refused:
            raise BadRequest(f"{refused}: not reachable for a provider here", field="baseUrl")
        spec["baseUrl"] = body.base_url
    if body.api_version:
        spec["apiVersion"] = body.api_version
    if body.rate_limits:
        spec["rateLimits"] = body.rate_limits.model_dump(by_alias=True, exclude_none=True)
    secret_name = f"{body.name}-api-key"
    if body.api_key:
        spec["apiKeySecretRef"] = {"name": secret_name, "key": "apiKey"}
    provider = {
        "apiVersion": API_VERSION,
        "kind": PROVIDER.kind,
        "metadata": {
            "name": body.name,
            "namespace": ns,
            "labels": CREATED_BY_ROUTER,
        },
        "spec": spec,
    }
    # The provider first, then its key Secret owned by it (deleted with it); if
    # the Secret cannot be made, the provider is taken back.
    try:
        created = await s.kube.create(LLM_PROVIDERS, provider)
    except KubeError as exc:
        raise _kube_error(exc, f"LLMProvider {ns}/{body.name}", ns) from None
    if body.api_key:
        meta = created["metadata"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": secret_name,
                "namespace": ns,
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": PROVIDER.kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                    }
                ],
            },
            "stringData": {"apiKey": body.api_key},
        }
        try:
            await s.kube.create(SECRETS, secret)
        except KubeError as exc:
            with contextlib.suppress(KubeError):
                await s.kube.delete(LLM_PROVIDERS, body.name, ns)
            raise _kube_error(
                exc, f"Secret {ns}/{secret_name} for the provider's key", ns
            ) from None
    return Response(
        orjson.dumps(
            {
                "name": body.name,
                "namespace": ns,
                "uid": created["metadata"]["uid"],
                "spec": created["spec"],
            }
        ),
        status_code=201,
        media_type="application/json",
    )


async def operator_probe(
    kube: KubeClient, namespace: str, name: str, wait_seconds: float = 20.0
) -> dict[str, Any]:
    """Annotate the provider, then wait for the operator's status from that probe."""
    asked = datetime.now(UTC)
    try:
        await kube.merge_patch(
            LLM_PROVIDERS,
            name,
            namespace,
            {"metadata": {"annotations": {PROBE_ANNOTATION: f"{time.time():.6f}"}}},
        )
    except KubeError as exc:
        raise _kube_error(exc, f"LLMProvider {namespace}/{name}", namespace) from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            status = (await kube.get(LLM_PROVIDERS, name, namespace)).get("status") or {}
        except KubeError as exc:
            raise _kube_error(exc, f"LLMProvider {namespace}/{name}", namespace) from None
        checked = status.get("lastCheckTime")
        if checked and datetime.fromisoformat(checked.replace("Z", "+00:00")) >= asked:
            return {
                "provider": name,
                "status": status.get("health", "unknown"),
                "latencyMs": status.get("latencyMs"),
                "checkedAt": checked,
                "message": status.get("message"),
                "consecutiveFailures": status.get("consecutiveFailures"),
                "models": status.get("discoveredModels") or [],
                "conditions": status.get("conditions") or [],
            }
        await asyncio.sleep(0.2)
    raise UpstreamTimeout(
        f"the operator did not report a probe of {name!r} within {wait_seconds:g}s", provider=name
    )
