"""Every error becomes an HTTP response here, in the shape its API's clients expect.

The native API and the OpenAI-compatible API answer ``{"error": {...}}`` (the
openai SDK reads ``error.message``); the Anthropic-compatible API answers
``{"type": "error", "error": {...}}`` as the anthropic SDK expects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from starlette.responses import Response

from switchyard.router.errors import SwitchyardError, UpstreamError

#: The error shape a client gets: the native API's, OpenAI's (also the Responses API's,
#: whose field names differ), Anthropic's.
Flavor = Literal["native", "openai", "responses", "anthropic"]

#: Anthropic's error types, by status, so its SDK raises the matching class.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    431: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


#: How surfaces other than the chat protocols name the neutral request fields that the
#: router's core names in errors.
_FIELD_NAMES: dict[Flavor, dict[str, str]] = {
    "native": {"max_tokens": "maxTokens"},
    "responses": {
        "max_tokens": "max_output_tokens",
        "response_format": "text.format",
        "reasoning_effort": "reasoning.effort",
    },
}


def _renamed(exc: SwitchyardError, flavor: Flavor) -> tuple[str, str | None]:
    """The message and field as ``flavor``'s API names them."""
    name = _FIELD_NAMES.get(flavor, {}).get(exc.field or "")
    if name is None:
        return exc.message, exc.field
    return re.sub(rf"\b{re.escape(exc.field or '')}\b", name, exc.message), name


def error_body(exc: SwitchyardError, flavor: Flavor) -> dict[str, Any]:
    status = exc.status
    if flavor == "anthropic":
        err: dict[str, Any] = {
            "type": _ANTHROPIC_TYPES.get(status, "api_error"),
            "message": exc.message,
            "code": exc.code,
        }
        if exc.field:
            err["field"] = exc.field
        err.update(exc.details())
        return {"type": "error", "error": err}
    message, field = _renamed(exc, flavor)
    err = {
        "message": message,
        "type": exc.code,
        "code": exc.code,
        "param": field,
    }
    if field:
        err["field"] = field
    if isinstance(exc, UpstreamError):
        err["provider"] = exc.provider
        err["upstreamStatus"] = exc.upstream_status
    err.update(exc.details())
    return {"error": err}


def error_response(exc: SwitchyardError, flavor: Flavor = "native") -> Response:
    headers = exc.headers()
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="switchyard"'
    return Response(
        orjson.dumps(error_body(exc, flavor)),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def flavor_for(path: str, headers: Mapping[str, str]) -> Flavor:
    """The error shape for a request: by path, and on the model list (which both SDKs
    read) by whether the client sent ``anthropic-version``."""
    if path.startswith("/v1/models") and "anthropic-version" in headers:
        return "anthropic"
    return flavor_of(path)


def flavor_of(path: str) -> Flavor:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/responses"):
        return "responses"
    if path.startswith("/v1/"):
        return "openai"
    return "native"
