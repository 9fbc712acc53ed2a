"""The OpenAPI document of the router, built from the same pydantic models it validates with.

The document is exact both ways: a body it allows is served (or refused for what only
the running router knows: a model or template that does not exist, a budget spent),
and a body it forbids is refused with a 4xx. The fuzz test holds it to that.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.core.selection import DROP_PARAMS_HEADER
from switchyard.router.http.admin import RenderBody
from switchyard.router.http.cluster_api import NewProvider
from switchyard.router.http.completions import CONTINUE_HEADER
from switchyard.router.http.services import services
from switchyard.router.protocols.anthropic import CountTokensBody, MessagesBody
from switchyard.router.protocols.embeddings import EmbeddingsBody
from switchyard.router.protocols.native import TASK_PATTERN, CompletionBody
from switchyard.router.protocols.openai import ChatBody
from switchyard.router.protocols.responses import ResponsesBody
from switchyard.router.storage.rollup import GROUP_BY

_MODELS: tuple[type[BaseModel], ...] = (
    CompletionBody,
    ChatBody,
    MessagesBody,
    CountTokensBody,
    ResponsesBody,
    EmbeddingsBody,
    RenderBody,
    NewProvider,
)

#: What each status means, for every operation that can answer it.
_STATUS = {
    "400": "Invalid request; the error names the field",
    "401": "Missing or unknown API key",
    "403": "The key lacks the scope this operation needs",
    "404": "The model, template or provider named does not exist",
    "409": "It exists already",
    "413": "The body is larger than the routing table's maxBodyBytes",
    "429": "A budget is spent or the key has too many requests in flight (Retry-After)",
    "502": "The provider failed",
    "503": "No routing table is loaded yet, storage is away, or every candidate failed",
    "504": "The provider did not answer in time",
}


def _version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0+unknown"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(
    summary: str,
    scope: str | None,
    *,
    body: type[BaseModel] | None = None,
    statuses: str = "",
    ok: str = "200",
    ok_types: tuple[str, ...] = ("application/json",),
    params: list[dict[str, Any]] | None = None,
    anthropic: bool = False,
) -> dict[str, Any]:
    """An operation; ``statuses`` lists the error statuses it may answer besides 401/403."""
    error = {"application/json": {"schema": _ref("AnthropicError" if anthropic else "Error")}}
    responses: dict[str, Any] = {ok: {"description": "OK", "content": {t: {} for t in ok_types}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    codes = statuses.split()
    if scope is not None:
        op["security"] = [{"bearer": []}, {"apiKey": []}] if anthropic else [{"bearer": []}]
        op["description"] = f"Needs an API key with the scope `{scope}`."
        codes = ["401", "403", "503", *codes]
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body.__name__)}},
        }
        codes = ["400", "413", *codes]
    for code in sorted(set(codes)):
        responses[code] = {"description": _STATUS[code], "content": error}
    if params:
        op["parameters"] = params
    return op


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def build(*, in_cluster: bool) -> dict[str, Any]:
    """The document; ``POST /api/v1/llm/providers`` is served only by a router in a cluster."""
    response_id = [
        {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    # All at once, so two protocols' models of one name (UserMessage) stay apart.
    _, top = models_json_schema(
        [(m, "validation") for m in _MODELS],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "field": {"type": "string"},
                    "attempts": {"type": "array"},
                },
            }
        },
    }
    schemas["AnthropicError"] = {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    }
    completion = "404 429 502 503 504"
    providers: dict[str, Any] = {
        "get": _op("Providers with health and breaker state", "completion")
    }
    if in_cluster:
        providers["post"] = _op(
            "Create an LLMProvider (and its key Secret) in the caller's namespace",
            "settings:write",
            body=NewProvider,
            statuses="409 502",
            ok="201",
        )
    date = {"type": "string", "description": "YYYY-MM-DD or an ISO 8601 date-time"}
    usage_params = [
        _query("startDate", "From (default: 30 days before endDate)", date),
        _query("endDate", "To; a date includes its whole day (default: now)", date),
        _query(
            "groupBy",
            "How rows are grouped: by period (weeks start on Monday), or by model, task "
            "type, provider or API key name ((none) for usage from before keys were counted "
            "apart)",
            {"enum": list(GROUP_BY), "default": "day"},
        ),
    ]
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    compat_headers = [
        {
            "name": "X-Switchyard-Task",
            "in": "header",
            "required": False,
            "description": "The task type, for routing when the model is 'auto'",
            "schema": {"type": "string", "pattern": TASK_PATTERN, "maxLength": 64},
        },
        {
            "name": DROP_PARAMS_HEADER,
            "in": "header",
            "required": False,
            "description": "Send the request to a provider of another protocol without the "
            "fields that protocol has no place for, instead of refusing it (400)",
            "schema": {"enum": ["true", "false"]},
        },
        {
            "name": CONTINUE_HEADER,
            "in": "header",
            "required": False,
            "description": "When the stream breaks after text was sent, continue it on "
            "another candidate (the table's routing.continueStreams otherwise)",
            "schema": {"enum": ["true", "false"]},
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard router", "version": _version()},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "paths": {
            "/api/v1/llm/completion": {
                "post": _op(
                    "Complete a prompt, routed by task type (SSE with stream: true)",
                    "completion",
                    body=CompletionBody,
                    statuses=completion,
                    ok_types=("application/json", "text/event-stream"),
                )
            },
            "/v1/chat/completions": {
                "post": _op(
                    "OpenAI-compatible chat completion",
                    "completion",
                    body=ChatBody,
                    statuses=completion,
                    ok_types=("application/json", "text/event-stream"),
                    params=compat_headers,
                )
            },
            "/v1/models": {
                "get": _op(
                    "The caller's models (Anthropic's shape with anthropic-version)", "completion"
                )
            },
            "/v1/models/{model_id}": {
                "get": _op(
                    "One model (Anthropic's shape with anthropic-version)",
                    "completion",
                    statuses="404",
                    params=[
                        {
                            "name": "model_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                )
            },
            "/v1/messages": {
                "post": _op(
                    "Anthropic-compatible Messages API",
                    "completion",
                    body=MessagesBody,
                    statuses=completion,
                    ok_types=("application/json", "text/event-stream"),
                    anthropic=True,
                    params=compat_headers,
                )
            },
            "/v1/responses": {
                "post": _op(
                    "OpenAI-compatible Responses API (kept unless store: false; SSE with "
                    "stream: true)",
                    "completion",
                    body=ResponsesBody,
                    statuses=completion,
                    ok_types=("application/json", "text/event-stream"),
                    params=compat_headers,
                )
            },
            "/v1/responses/{response_id}": {
                "get": _op(
                    "A kept Responses API answer", "completion", statuses="404", params=response_id
                ),
                "delete": _op(
                    "Forget a kept Responses API answer",
                    "completion",
                    statuses="404",
                    params=response_id,
                ),
            },
            "/v1/responses/{response_id}/input_items": {
                "get": _op(
                    "The items a kept answer's model was given, earlier turns included",
                    "completion",
                    statuses="400 404",
                    params=[
                        *response_id,
                        _query("order", "asc or desc (default)", {"enum": ["asc", "desc"]}),
                        _query(
                            "limit",
                            "Items per page, 1 to 100 (default 20)",
                            {"type": "integer", "minimum": 1, "maximum": 100},
                        ),
                        _query("after", "The id of the item before the page", {"type": "string"}),
                        _query(
                            "include",
                            "Accepted and ignored",
                            {"type": "array", "items": {"type": "string"}},
                        ),
                    ],
                )
            },
            "/v1/embeddings": {
                "post": _op(
                    "OpenAI-compatible embeddings, by embedding models (modelType: embedding)",
                    "completion",
                    body=EmbeddingsBody,
                    statuses=completion,
                    params=compat_headers[:1],
                )
            },
            "/v1/messages/count_tokens": {
                "post": _op(
                    "Anthropic-compatible token count: by an Anthropic provider of the "
                    "model, else estimated (x-switchyard-token-count says which)",
                    "completion",
                    body=CountTokensBody,
                    statuses="404 503",
                    anthropic=True,
                    params=compat_headers[:1],
                )
            },
            "/api/v1/llm/providers": providers,
            "/api/v1/llm/providers/{name}/health-check": {
                "post": _op("Probe a provider now", "settings:write", statuses="404", params=name)
            },
            "/api/v1/llm/usage": {
                "get": _op(
                    "Requests, tokens, cost, errors and latency of the caller's organization",
                    "usage:read",
                    statuses="400",
                    params=usage_params,
                )
            },
            "/api/v1/llm/templates": {"get": _op("Prompt templates", "completion")},
            "/api/v1/llm/templates/render": {
                "post": _op(
                    "Render a template with variables",
                    "completion",
                    body=RenderBody,
                    statuses="404",
                )
            },
            "/openapi.json": {"get": _op("This document", None)},
        },
    }


_DOCUMENTS: dict[bool, bytes] = {}


async def openapi(request: Request) -> Response:
    in_cluster = services(request).kube is not None
    document = _DOCUMENTS.get(in_cluster)
    if document is None:
        document = _DOCUMENTS[in_cluster] = orjson.dumps(build(in_cluster=in_cluster))
    return Response(document, media_type="application/json")
