"""The OpenAPI document of the router, built from the same pydantic models it validates with."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.http.admin import RenderBody
from switchyard.router.protocols.anthropic import MessagesBody
from switchyard.router.protocols.native import CompletionBody
from switchyard.router.protocols.openai import ChatBody

_ERROR = {"$ref": "#/components/schemas/Error"}


def _version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0+unknown"


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


def _op(
    summary: str,
    scope: str | None,
    body: type[BaseModel] | None = None,
    stream: bool = False,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {}}},
        "400": {
            "description": "Invalid request; error.field names the problem",
            "content": {"application/json": {"schema": _ERROR}},
        },
    }
    if stream:
        responses["200"]["content"]["text/event-stream"] = {}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if scope is not None:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Needs an API key with the scope `{scope}`."
        responses["401"] = {
            "description": "Missing or invalid API key",
            "content": {"application/json": {"schema": _ERROR}},
        }
        responses["403"] = {
            "description": f"The key lacks the scope {scope}",
            "content": {"application/json": {"schema": _ERROR}},
        }
    if body is not None:
        op["requestBody"] = _body(body)
        responses["413"] = {"description": "Body too large"}
    if stream or (body is not None and scope == "completion"):
        responses["503"] = {
            "description": "Every candidate failed; error.attempts lists them",
            "content": {"application/json": {"schema": _ERROR}},
        }
    if params:
        op["parameters"] = params
    return op


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (CompletionBody, ChatBody, MessagesBody, RenderBody):
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                    "field": {"type": "string"},
                    "attempts": {"type": "array"},
                },
            }
        },
    }
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard router", "version": _version()},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/llm/completion": {
                "post": _op(
                    "Complete a prompt, routed by task type (SSE with stream: true)",
                    "completion",
                    CompletionBody,
                    stream=True,
                )
            },
            "/v1/chat/completions": {
                "post": _op(
                    "OpenAI-compatible chat completion", "completion", ChatBody, stream=True
                )
            },
            "/v1/models": {"get": _op("OpenAI-compatible model list", "completion")},
            "/v1/messages": {
                "post": _op(
                    "Anthropic-compatible Messages API", "completion", MessagesBody, stream=True
                )
            },
            "/api/v1/llm/providers": {
                "get": _op("Providers with health and breaker state", "completion")
            },
            "/api/v1/llm/providers/{name}/health-check": {
                "post": _op("Probe a provider now", "settings:write", params=name)
            },
            "/api/v1/llm/templates": {"get": _op("Prompt templates", "completion")},
            "/api/v1/llm/templates/render": {
                "post": _op("Render a template with variables", "completion", RenderBody)
            },
            "/healthz": {"get": _op("Liveness", None)},
            "/readyz": {"get": _op("Readiness: a routing table is loaded", None)},
            "/metrics": {"get": _op("Prometheus metrics", None)},
            "/openapi.json": {"get": _op("This document", None)},
        },
    }


_DOCUMENT: bytes | None = None


async def openapi(request: Request) -> Response:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = orjson.dumps(build())
    return Response(_DOCUMENT, media_type="application/json")
