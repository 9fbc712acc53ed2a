"""The one error hierarchy of the router.

    SwitchyardError                    every error the router answers with
    ├── BadRequest (400)               the request is wrong; ``field`` names what
    │   └── PayloadTooLarge (413)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── Conflict (409)                 it exists already (cluster mode)
    ├── RequestTimeout (408)           the client did not send its request in time
    ├── HeadersTooLarge (431)          the request's head exceeds the server's limit
    ├── ClientDisconnected (499)       the client left mid-request (usage and logs only)
    ├── BudgetExceeded (429)           a local limit refused the request
    │   └── TooManyInFlight            the API key has too many requests open
    ├── InternalError (500)            the router itself failed; never a provider's fault
    ├── UpstreamError (502)            one provider failed; carries its status
    │   ├── UpstreamConnectError       could not connect (retryable)
    │   │   └── UpstreamAddressRefused  the address policy refused its address
    │   ├── UpstreamTimeout            connect / first-token / total timeout
    │   ├── UpstreamStatusError        the provider answered 4xx/5xx
    │   └── UpstreamProtocolError      the provider's answer made no sense
    ├── NoCandidateAvailable (503)     every candidate failed or none fit
    ├── TooManyConnections (503)       the server holds as many connections as it may
    ├── StorageUnavailable (503)       usage storage cannot answer a query
    ├── ConversationsBusy (503)        the router holds as many kept conversations as it may
    └── NotInCluster (405)             a method only a router in a cluster serves

Each maps to an HTTP response in one place: ``switchyard.router.http.errors``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal


class SwitchyardError(Exception):
    """Base class: an HTTP status, a machine-readable code and a human message."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, Any]:
        """Extra JSON members for the error body (never anything secret)."""
        return {}

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers for the error response."""
        return {}


class BadRequest(SwitchyardError):
    status = 400
    code = "invalid_request"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class Unauthorized(SwitchyardError):
    status = 401
    code = "unauthorized"


class Forbidden(SwitchyardError):
    status = 403
    code = "forbidden"


class NotFound(SwitchyardError):
    status = 404
    code = "not_found"


class Conflict(SwitchyardError):
    status = 409
    code = "conflict"


class RequestTimeout(SwitchyardError):
    status = 408
    code = "request_timeout"


class HeadersTooLarge(SwitchyardError):
    status = 431
    code = "request_header_fields_too_large"


class ClientDisconnected(SwitchyardError):
    """Not an answer (the client is gone): how a request it left is recorded."""

    status = 499
    code = "client_disconnected"


class StorageUnavailable(SwitchyardError):
    status = 503
    code = "storage_unavailable"


class ConversationsBusy(SwitchyardError):
    status = 503
    code = "conversations_busy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ClusterUnavailable(SwitchyardError):
    """The Kubernetes API failed a request the router made for the client (not a refusal
    of the request itself): 503."""

    status = 503
    code = "cluster_unavailable"


class NotInCluster(SwitchyardError):
    """A method this router does not serve outside a cluster: 405, with what it does."""

    status = 405
    code = "not_in_cluster"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class BudgetExceeded(SwitchyardError):
    status = 429
    code = "budget_exceeded"


class TooManyInFlight(BudgetExceeded):
    code = "too_many_in_flight"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyConnections(SwitchyardError):
    status = 503
    code = "too_many_connections"


class InternalError(SwitchyardError):
    """The router failed on its own (a bug, or a limit it should have checked first).

    Never counted against a provider: nothing it answered caused it.
    """

    status = 500
    code = "internal_error"


class UpstreamError(SwitchyardError):
    """A single provider call failed.

    ``upstream_status`` is the provider's HTTP status when it answered;
    ``retryable`` says whether another candidate should be tried;
    ``retry_after`` is the provider's Retry-After in seconds, when given;
    ``detail`` is what the router's log and the provider's status say, when it holds
    more than tenants may see (the provider's address).
    """

    status = 502
    code = "upstream_error"
    retryable = True
    #: Whose failure it is: the provider's (its breaker counts it), one model's (that
    #: model's breaker counts it; the provider's other models serve on), or this
    #: request's (nobody's: it may suit another candidate, or be the client's error).
    scope: Literal["provider", "model", "request"] = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        upstream_type: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.upstream_type = upstream_type
        self.detail = detail or message


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamAddressRefused(UpstreamConnectError):
    """Not connected to: the address the provider's ``baseUrl`` names, or one its name
    resolves to, is one the address policy refuses (``contract.address_refusal``)."""

    code = "upstream_address_refused"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504


#: A provider's refusal that names what its model cannot do (Ollama: "… does not support
#: tools"; vLLM: "… does not support …"; OpenAI: "… is not supported with this model").
_MODEL_CANNOT = re.compile(
    r"does not support (tools|function|images?|vision|structured|json)"
    r"|not supported (with|by|for) this model|model_not_found|DeploymentNotFound",
    re.IGNORECASE,
)
#: A prompt longer than the model's window (OpenAI context_length_exceeded, vLLM,
#: Ollama, Anthropic "prompt is too long").
_TOO_LONG = re.compile(
    r"context.length|maximum context|context window|prompt is too long|too many tokens",
    re.IGNORECASE,
)


class UpstreamStatusError(UpstreamError):
    code = "upstream_status_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int,
        retry_after: float | None = None,
        upstream_type: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            upstream_status=upstream_status,
            retry_after=retry_after,
            upstream_type=upstream_type,
        )
        if upstream_status == 404 or (
            upstream_status in (400, 422) and _MODEL_CANNOT.search(message)
        ):
            # The model is not there (a mis-mapped name, a deployment removed) or cannot
            # do what was asked: another model may, and the provider is not to blame.
            self.scope = "model"
        elif upstream_status in (400, 413, 422):
            self.scope = "request"
            # The client's own mistakes are not fixed by asking someone else, but a
            # prompt too long for this model may fit another.
            self.retryable = bool(_TOO_LONG.search(message))
            if not self.retryable:
                self.status = upstream_status


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one candidate, as reported to the client: nothing secret."""

    provider: str
    model: str
    error: str
    status: int | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "error": self.error,
            "status": self.status,
            "message": self.message,
        }


class NoCandidateAvailable(SwitchyardError):
    status = 503
    code = "no_candidate_available"

    def __init__(
        self,
        message: str,
        attempts: list[Attempt] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts or []
        #: Seconds until a skipped provider may be tried again (its breaker or budget).
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {"attempts": [a.as_json() for a in self.attempts]}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ConfigError(Exception):
    """A routing table that cannot be used; ``path`` names the offending field."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message
