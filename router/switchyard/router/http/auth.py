"""Bearer API keys → organization and scopes. Keys are compared as SHA-256 hashes."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from switchyard.router.core.caller import Caller
from switchyard.router.core.catalog import Catalog
from switchyard.router.errors import Forbidden, Unauthorized


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    # The anthropic SDK sends its key as x-api-key.
    return request.headers.get("x-api-key") or None


def authenticate(request: Request, catalog: Catalog, scope: str) -> Caller:
    key = presented_key(request)
    if key is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    caller = catalog.callers.get(hashlib.sha256(key.encode()).hexdigest())
    if caller is None:
        raise Unauthorized("invalid API key")
    if scope not in caller.scopes:
        raise Forbidden(f"this API key lacks the scope {scope!r}")
    return caller
