"""``GET /v1/models`` and ``GET /v1/models/{id}``: the caller's models, in OpenAI's shape
(with their context window, output cap and capabilities), or in Anthropic's when the
request carries ``anthropic-version`` (as the anthropic SDK's ``models.list()`` and
``models.retrieve()`` send it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.catalog import Route
from switchyard.router.errors import NotFound
from switchyard.router.http.auth import authenticate
from switchyard.router.http.services import services


def _openai(name: str, routes: list[Route], created: int) -> dict[str, Any]:
    """OpenAI's model object, with what routing knows of the name (the best of its
    models, as a request goes to one that can serve it)."""
    models = [r.model for r in routes]
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": routes[0].provider.name,
        "model_type": "embedding" if all(m.model_type == "embedding" for m in models) else "chat",
        "context_window": max(m.context_window for m in models),
        "max_output_tokens": max(m.max_output_tokens for m in models),
        "capabilities": {
            "function_calling": any(m.supports_function_calling for m in models),
            "structured_output": any(m.supports_structured_output for m in models),
            "logprobs": any(m.supports_logprobs for m in models),
            "streaming": any(m.supports_streaming for m in models),
        },
    }


def _anthropic(name: str, routes: list[Route], created: int) -> dict[str, Any]:
    return {
        "type": "model",
        "id": name,
        "display_name": routes[0].model.display_name or name,
        "created_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
    }


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def list_models(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    models = sorted(catalog.org(caller.organization).by_name.items())
    created = int(s.started_at)
    if "anthropic-version" in request.headers:
        data = [_anthropic(name, routes, created) for name, routes in models]
        return _json(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )
    return _json(
        {"object": "list", "data": [_openai(name, routes, created) for name, routes in models]}
    )


async def get_model(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "completion")
    name = request.path_params["model_id"]
    routes = catalog.org(caller.organization).by_name.get(name)
    if not routes:
        raise NotFound(f"model {name!r} does not exist", field="model")
    created = int(s.started_at)
    if "anthropic-version" in request.headers:
        return _json(_anthropic(name, routes, created))
    return _json(_openai(name, routes, created))
