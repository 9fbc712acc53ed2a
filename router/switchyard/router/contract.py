"""The contract between Switchyard's halves, its command line and its chart.

What the operator writes and the router reads, written once: the Kubernetes API group
and version, the custom resource kinds, the labels and annotations both halves act on,
the provider types and API-key scopes, and the schema of the routing-table document
(``switchyard.dev/v1alpha1``, ``RoutingTable``).

The operator produces the routing table into a ConfigMap; a person writes the same
document by hand to run the router without a cluster. Field names are the brief's
(camelCase). Secrets never appear in it: API keys are references. See
``docs/routing-table.md``. This module imports nothing else of Switchyard.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

# -- the Kubernetes API ------------------------------------------------------------
GROUP = "switchyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True, slots=True)
class Kind:
    """A custom resource kind Switchyard defines (see ``crds/``)."""

    kind: str
    plural: str


PROVIDER = Kind("LLMProvider", "llmproviders")
MODEL = Kind("LLMModel", "llmmodels")
TEMPLATE = Kind("PromptTemplate", "prompttemplates")
KINDS = (PROVIDER, MODEL, TEMPLATE)

#: Marks a Secret as an API key of its namespace's organization (data: sha256, scopes).
API_KEY_LABEL = "switchyard.dev/api-key"
#: Set on an LLMProvider to ask the operator for a probe now (any new value).
PROBE_ANNOTATION = "switchyard.dev/probe-requested-at"
#: The routing table's SHA-256, on each ConfigMap the operator publishes.
CHECKSUM_ANNOTATION = "switchyard.dev/checksum"
#: On every object the operator creates.
MANAGED_BY_OPERATOR = {"app.kubernetes.io/managed-by": "switchyard-operator"}
#: On objects the router creates through its API.
CREATED_BY_ROUTER = {"app.kubernetes.io/created-by": "switchyard-router"}

#: Where the operator publishes by default (namespace, routing ConfigMap, keys Secret,
#: settings ConfigMap); the router is told the same names on its command line.
DEFAULT_NAMESPACE = "switchyard"
DEFAULT_ROUTING_CONFIGMAP = "switchyard-routing"
DEFAULT_KEYS_SECRET = "switchyard-provider-keys"
DEFAULT_SETTINGS_CONFIGMAP = "switchyard-settings"

# -- providers and keys ---------------------------------------------------------------
ProviderType = Literal["anthropic", "openai", "azure_openai", "vllm", "ollama"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
#: The wire protocol each provider type speaks: a request's fields are forwarded as sent
#: to a provider of the protocol the client spoke.
WireProtocol = Literal["openai", "anthropic", "ollama"]
PROTOCOL_OF: dict[str, WireProtocol] = {
    "openai": "openai",
    "azure_openai": "openai",
    "vllm": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
}
#: Fields forwarded as sent within a protocol that also have a counterpart in another:
#: (the client's protocol, the provider's) -> the fields translated on the way.
TRANSLATED: dict[tuple[str, str], frozenset[str]] = {
    ("openai", "ollama"): frozenset(
        {"response_format", "seed", "presence_penalty", "frequency_penalty"}
    ),
    ("openai", "anthropic"): frozenset({"parallel_tool_calls", "response_format"}),
    ("anthropic", "openai"): frozenset({"output_config"}),
    ("anthropic", "ollama"): frozenset({"top_k", "output_config"}),
}


def _schema_or_text(value: Any) -> bool:
    """OpenAI's ``response_format`` that Anthropic's structured output can state: a JSON
    schema (JSON mode, ``json_object``, has no counterpart there)."""
    if not isinstance(value, dict):
        return False
    spec = value.get("json_schema")
    return value.get("type") == "text" or (
        value.get("type") == "json_schema"
        and isinstance(spec, dict)
        and isinstance(spec.get("schema"), dict)
    )


def _format_only(value: Any) -> bool:
    """Anthropic's ``output_config`` holding only a JSON schema ``format`` (its other
    members, such as ``effort``, have no counterpart elsewhere)."""
    if not isinstance(value, dict) or set(value) != {"format"}:
        return False
    fmt = value["format"]
    return (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and isinstance(fmt.get("schema"), dict)
    )


#: Translated fields whose counterpart holds only some of their values.
_WHEN: dict[tuple[str, str, str], Callable[[Any], bool]] = {
    ("openai", "anthropic", "response_format"): _schema_or_text,
    ("anthropic", "openai", "output_config"): _format_only,
    ("anthropic", "ollama", "output_config"): _format_only,
}


#: Fields set to the value that asks for nothing (the protocol's own default), which
#: any provider honours by doing nothing: the SDKs send some of them unasked.
_ASKS_NOTHING: dict[tuple[str, str], tuple[Any, ...]] = {
    ("openai", "store"): (False,),
    ("openai", "logprobs"): (False,),
    ("openai", "n"): (1,),
    ("openai", "parallel_tool_calls"): (True,),
    ("anthropic", "thread"): (False,),
}


def untranslated(params: Mapping[str, Any], client: str | None, provider: str) -> list[str]:
    """The client's fields a provider of ``provider``'s protocol can neither take as
    sent nor have translated. A field that is null, or set to the value that asks for
    nothing, is honoured anywhere."""
    if provider == client:
        return []
    translated = TRANSLATED.get((client or "", provider), frozenset())
    out: list[str] = []
    for name, value in params.items():
        if value is None or value in _ASKS_NOTHING.get((client or "", name), ()):
            continue
        when = _WHEN.get((client or "", provider, name))
        if name not in translated or (when is not None and not when(value)):
            out.append(name)
    return out


HealthStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
Scope = Literal["completion", "usage:read", "settings:write"]
SCOPES: tuple[str, ...] = get_args(Scope)

#: Provider types whose API is OpenAI's chat-completions protocol.
OPENAI_COMPATIBLE: frozenset[str] = frozenset({"openai", "azure_openai", "vllm"})
#: Provider types with an embeddings API (OpenAI's /embeddings, Ollama's /api/embed).
EMBEDDING_TYPES: frozenset[str] = frozenset({"openai", "azure_openai", "vllm", "ollama"})
#: Types that need no baseUrl because the provider has one public endpoint.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
#: Types that reach a paid cloud API and so need an API key.
CLOUD_TYPES: frozenset[str] = frozenset({"openai", "azure_openai", "anthropic"})
#: Model servers in the cluster: several replicas of one may be listed as ``endpoints``.
IN_CLUSTER_TYPES: frozenset[str] = frozenset({"vllm", "ollama"})
#: The most endpoints one provider may list (an LLMProvider's Service's ready pods).
MAX_ENDPOINTS = 64

# -- where providers may be reached ---------------------------------------------------
# The address policy, written once: the operator and the router's API check a baseUrl's
# host with it, the adapters (``providers.addresses``) every address they connect to.
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused for every provider type, whatever ``providerNetworks`` allows: link-local
#: (where every cloud keeps its metadata service, 169.254.169.254, and ECS's task
#: endpoint) and the metadata services elsewhere: AWS's and GCP's IPv6 ones, Alibaba's,
#: Oracle's older one, Azure's WireServer.
_METADATA = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "fd20:ce::254/128",
        "100.100.100.200/32",
        "192.0.0.192/32",
        "168.63.129.16/32",
    )
]
_METADATA_NAMES = (
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
)
#: Refused for the cloud types unless ``providerNetworks`` allows them (with every address
#: that is not global: documentation, benchmarking, reserved ranges).
_INTERNAL = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
    )
]
#: IPv6 prefixes whose last 32 bits are an IPv4 address reached through them (NAT64's
#: well-known and local-use prefixes, the deprecated IPv4-compatible form).
_V4_IN_V6 = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")]
_CLUSTER_SUFFIXES = (".svc", ".cluster.local", ".internal", ".local", ".localhost")
_CLUSTER_NAMES = ("localhost", "kubernetes", "kubernetes.default")

METADATA_REFUSAL = "a link-local or cloud metadata address"
INTERNAL_REFUSAL = (
    "a private, loopback or cluster-internal address, which a cloud provider type may not "
    "use unless routing.providerNetworks.allowCIDRs holds it"
)


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) > 1 and any(address in n for n in _V4_IN_V6):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(provider_type: str, address: Address, allowed: Sequence[Network]) -> str | None:
    """Why ``address`` may not be reached for a provider of ``provider_type``; None if it
    may. ``allowed``: the table's ``providerNetworks.allowCIDRs``, which open private and
    cluster-internal addresses to the cloud types, never link-local or metadata ones."""
    if isinstance(address, ipaddress.IPv6Address):
        v4 = _embedded_v4(address)
        if v4 is not None:
            return address_refusal(provider_type, v4, allowed)
    if any(address in n for n in _METADATA if n.version == address.version):
        return METADATA_REFUSAL
    if address.is_multicast:
        return "a multicast address"
    if any(address in n for n in allowed if n.version == address.version):
        return None
    internal = any(address in n for n in _INTERNAL if n.version == address.version)
    if provider_type in CLOUD_TYPES and (internal or not address.is_global):
        return INTERNAL_REFUSAL
    return None


def _literal_address(host: str) -> Address | None:
    """The address a host names literally, in any form the resolver would take (aiohttp
    refuses the legacy IPv4 forms, ``2852039166`` or ``169.254.43518``, as it connects;
    they are judged as what they stand for here)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _cluster_name(host: str) -> bool:
    """A name only a cluster's (or a machine's own) resolver knows: ``*.svc``,
    ``*.cluster.local``, ``kubernetes``, ``localhost``, or one label (found through the
    pod's search domains: the router's own namespace first)."""
    return "." not in host or host in _CLUSTER_NAMES or host.endswith(_CLUSTER_SUFFIXES)


def host_refusal(provider_type: str, host: str, allowed: Sequence[Network]) -> str | None:
    """Why the host of a base URL may not be reached, as far as its text tells (a name is
    checked again, address by address, whenever a connection is made).

    A cluster's name is refused for a cloud type outright while no network is allowed; once
    one is, the addresses the name resolves to decide."""
    host = host.strip("[]").rstrip(".").lower()
    address = _literal_address(host)
    if address is not None:
        return address_refusal(provider_type, address, allowed)
    if host in _METADATA_NAMES:
        return "a cloud metadata service"
    if provider_type in CLOUD_TYPES and not allowed and _cluster_name(host):
        return (
            "a cluster-internal name, which a cloud provider type may not use unless "
            "routing.providerNetworks.allowCIDRs holds the network it resolves to"
        )
    return None


def url_refusal(provider_type: str, url: str, allowed: Sequence[Network]) -> str | None:
    """Why a provider with this base URL may not be reached; None if it may, as far as the
    URL tells."""
    host = urlsplit(url).hostname or ""
    reason = host_refusal(provider_type, host, allowed)
    return f"baseUrl is {reason}" if reason else None


# -- the routing table ------------------------------------------------------------------
KIND = "RoutingTable"

#: A template placeholder, ``{{name}}``; group 1 is the variable's name.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(text: str) -> list[str]:
    """Variable names used as ``{{name}}`` in a template, in first-use order."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def _decimal_string(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"must be a decimal number as a string, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"must be a finite, non-negative decimal, got {value!r}")
    return value


def _price(value: Any) -> Any:
    # Prices are strings so that YAML never turns 0.15 into a binary float.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('must be a decimal string such as "0.15" (quote it in YAML)')
    return str(value)


DecimalString = Annotated[str, AfterValidator(_decimal_string)]


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"must be a network such as 10.0.0.0/8, got {value!r}") from None
    return value


def base_url_shape(value: str) -> str:
    """A base URL a path is appended to: no query, fragment or credentials, which would
    change where requests go or what they carry."""
    parts = urlsplit(value)
    if parts.query or "?" in value:
        raise ValueError("may not hold a query string ('?')")
    if parts.fragment or "#" in value:
        raise ValueError("may not hold a fragment ('#')")
    if "@" in parts.netloc:
        raise ValueError("may not hold credentials ('user:password@'): use apiKey")
    if not parts.hostname:
        raise ValueError("must name a host")
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"),
]
Organization = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class SecretRef(_Model):
    """Where an API key comes from: an environment variable, a file (a mounted
    Secret), or a key of the provider-keys Secret the operator keeps for the router."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1)
    secret_key: str | None = Field(default=None, pattern=r"^[-._a-zA-Z0-9]{1,253}$")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if sum(x is not None for x in (self.env, self.file, self.secret_key)) != 1:
            raise ValueError("give exactly one of 'env', 'file' or 'secretKey'")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"env {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        return f"provider-keys secret key {self.secret_key}"


class RateLimits(_Model):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class Timeouts(_Model):
    """Per-provider timeouts in milliseconds (integers: no floats in a spec)."""

    connect_ms: int = Field(default=5_000, ge=1)
    first_token_ms: int = Field(default=30_000, ge=1)
    total_ms: int = Field(default=300_000, ge=1)


#: ``host:port`` of one model-server replica: an IPv4 address, a bracketed IPv6 one, or
#: a DNS name.
EndpointAddress = Annotated[
    str,
    StringConstraints(
        max_length=260,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$",
    ),
]


class Provider(_Model):
    name: Name
    organization: Organization = "default"
    provider_type: ProviderType
    base_url: Annotated[str, AfterValidator(base_url_shape)] | None = Field(
        default=None, pattern=r"^https?://[^\s?#@]+$"
    )
    api_key: SecretRef | None = None
    api_version: str | None = Field(
        default=None, description="Azure OpenAI api-version query parameter."
    )
    priority: int = Field(default=100, ge=0, le=1_000_000)
    is_default: bool = False
    is_enabled: bool = True
    rate_limits: RateLimits = RateLimits()
    health_status: HealthStatus = "unknown"
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(default=256, ge=1, le=10_000)
    endpoints: tuple[EndpointAddress, ...] = Field(
        default=(),
        max_length=MAX_ENDPOINTS,
        description="The replicas of an in-cluster model server (host:port), each called "
        "at baseUrl's path and balanced by live load and prompt-cache affinity; the "
        "operator fills it from an LLMProvider's serviceRef. Empty: baseUrl is called",
    )

    @model_validator(mode="after")
    def _base_url_when_needed(self) -> Provider:
        if self.base_url is None and self.provider_type not in DEFAULT_BASE_URLS:
            raise ValueError(f"baseUrl is required for providerType {self.provider_type}")
        if self.endpoints and self.provider_type not in IN_CLUSTER_TYPES:
            types = ", ".join(sorted(IN_CLUSTER_TYPES))
            raise ValueError(
                f"endpoints are for in-cluster provider types ({types}), not {self.provider_type}"
            )
        return self

    @property
    def url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URLS[self.provider_type]).rstrip("/")

    @property
    def display_url(self) -> str:
        """The URL without any user:password part, for messages and listings."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class Model(_Model):
    name: Name
    organization: Organization = "default"
    provider: Name
    object_name: Name | None = Field(
        default=None,
        description="The LLMModel this entry was compiled from (in the organization's "
        "namespace), where a router reports the model's own failures",
    )
    model_name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    display_name: str | None = None
    context_window: int = Field(ge=1, le=100_000_000)
    max_output_tokens: int = Field(ge=1, le=10_000_000)
    model_type: Literal["chat", "embedding"] = Field(
        default="chat",
        description="chat: completions and messages; embedding: POST /v1/embeddings only",
    )
    supports_function_calling: bool = False
    supports_streaming: bool = True
    supports_structured_output: bool = Field(
        default=False,
        description="JSON mode or a JSON schema (response_format, output_config.format, "
        "text.format) is honoured",
    )
    supports_logprobs: bool = Field(
        default=False, description="Token log probabilities (logprobs, top_logprobs)"
    )
    supports_vision: bool = Field(default=False, description="Images in user messages")
    input_price_per_1m_tokens: Annotated[DecimalString, Field(alias="inputPricePer1MTokens")] = "0"
    output_price_per_1m_tokens: Annotated[DecimalString, Field(alias="outputPricePer1MTokens")] = (
        "0"
    )
    avg_latency_ms: int | None = Field(default=None, ge=0)
    tokens_per_second: float | None = Field(default=None, ge=0)
    best_for: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32
    )
    is_enabled: bool = True

    @field_validator("input_price_per_1m_tokens", "output_price_per_1m_tokens", mode="before")
    @classmethod
    def _prices_as_strings(cls, value: Any) -> Any:
        return _price(value)

    @model_validator(mode="after")
    def _consistent(self) -> Model:
        if self.max_output_tokens > self.context_window:
            raise ValueError(
                f"maxOutputTokens ({self.max_output_tokens}) exceeds contextWindow "
                f"({self.context_window})"
            )
        if len(set(self.best_for)) != len(self.best_for):
            raise ValueError("bestFor entries must be unique")
        return self


class TemplateOverride(_Model):
    model: Name
    template: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]


class Template(_Model):
    name: Name
    organization: Organization = "default"
    description: str | None = None
    task_type: str | None = None
    template: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]
    variables: (
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] | None
    ) = None
    model_overrides: list[TemplateOverride] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _variables_match(self) -> Template:
        if self.variables is None:
            return self
        declared = set(self.variables)
        texts = [("template", self.template)] + [
            (f"modelOverrides[{i}].template", o.template)
            for i, o in enumerate(self.model_overrides)
        ]
        for where, text in texts:
            used = set(placeholders(text))
            if undeclared := sorted(used - declared):
                raise ValueError(f"{where} uses undeclared variables: {', '.join(undeclared)}")
        if unused := sorted(declared - set().union(*(set(placeholders(t)) for _, t in texts))):
            raise ValueError(f"declared variables are never used: {', '.join(unused)}")
        return self


class ApiKey(_Model):
    name: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    organization: Organization = "default"
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["completion"]), min_length=1)


RankKey = Literal["taskFit", "priority", "price", "latency"]


class Breaker(_Model):
    failure_threshold: int = Field(default=5, ge=1, le=1000)
    cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)


class StallSettings(_Model):
    """When a call that has not answered is taken for stalled, and what then."""

    multiplier: float = Field(
        default=3.0,
        ge=1.0,
        le=100.0,
        description="A call is stalled after this many times its route's recent p99 "
        "latency (a stream's first event, a plain call's answer)",
    )
    floor_ms: int = Field(
        default=250, ge=1, le=600_000, description="Never before this many milliseconds"
    )
    min_samples: int = Field(
        default=20,
        ge=1,
        le=256,
        description="Answers a route must have given before its deadline applies; until "
        "then only the provider's fixed timeouts do",
    )
    hedge: bool = Field(
        default=True,
        description="Keep the stalled call running while the next candidate is asked, and "
        "use whichever answers first; false: give the stalled call up",
    )


class TracingSettings(_Model):
    """What the spans of traced requests may hold (where they go: ``--otlp-endpoint``)."""

    capture_content: bool = Field(
        default=False,
        description="Put prompts and answers on the request spans (gen_ai.input.messages, "
        "gen_ai.output.messages), each cut at 16 KiB; off, spans hold sizes, tokens and "
        "names only",
    )


class ContinueStreams(_Model):
    """Whether a stream that breaks mid-way goes on on another candidate."""

    default: bool = Field(default=False, description="For requests that do not say")
    client_may_enable: bool = Field(
        default=True,
        description="A request may turn it on with X-Switchyard-Continue-Streams: true "
        "(turning it off is always allowed)",
    )


class ProviderNetworks(_Model):
    """Where the cloud provider types may be reached beyond the internet. Link-local and
    cloud metadata addresses are refused for every provider type, always; private,
    loopback, shared and cluster-internal ones (and a cluster's names) for the cloud types
    (``anthropic``, ``openai``, ``azure_openai``) unless a network here holds them; the
    in-cluster types (``vllm``, ``ollama``) may reach them anyway (see docs/limits.md)."""

    allow_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(
        default_factory=list,
        alias="allowCIDRs",
        max_length=256,
        description="Networks the cloud provider types may reach (10.0.0.0/8, fd00::/8); "
        "never opens a link-local or metadata address",
    )


class RoutingSettings(_Model):
    """How candidates are ranked and how hard the router tries."""

    rank_by: list[RankKey] = Field(
        default_factory=lambda: list[RankKey](["taskFit", "priority", "price", "latency"]),
        min_length=1,
    )
    max_attempts: int = Field(default=3, ge=1, le=20)
    default_max_tokens: int = Field(default=1024, ge=1, le=8192)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_retry_after_seconds: float = Field(default=60.0, ge=0, le=3600)
    clamp_max_tokens: bool = Field(
        default=True,
        description="Ask a model for at most the output it allows (and the context left) "
        "when a request asks for more, instead of skipping it",
    )
    drop_unsupported_params: bool = Field(
        default=False,
        description="Drop request fields a candidate of another protocol cannot take, "
        "instead of refusing the request (400)",
    )
    max_in_flight_per_key: int = Field(
        default=256,
        ge=0,
        le=1_000_000,
        description="Completions one API key may have open per router; 0: no limit",
    )
    stored_response_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="How long Responses API answers are kept (store) for retrieval and "
        "previous_response_id; 0: none are kept",
    )
    max_stored_conversation_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="The most a kept conversation (Responses API answers with store, "
        "message threads) may hold, in stored JSON bytes: a turn that would pass it is "
        "refused (400) before anything is spent",
    )
    provider_networks: ProviderNetworks = ProviderNetworks()
    breaker: Breaker = Breaker()
    stall: StallSettings = StallSettings()
    tracing: TracingSettings = TracingSettings()
    continue_streams: ContinueStreams = Field(
        default_factory=lambda: ContinueStreams(),
        description="When a stream breaks after text was sent, continue it on another "
        "candidate with the text so far as the answer's beginning. true or false sets "
        "it for every request, which may not ask otherwise; the object form lets "
        "requests turn it on (X-Switchyard-Continue-Streams)",
    )

    @field_validator("continue_streams", mode="before")
    @classmethod
    def _continue_streams(cls, value: Any) -> Any:
        if isinstance(value, bool):
            # A table that says yes or no has decided: requests may still say no.
            return {"default": value, "clientMayEnable": value}
        return value

    @model_validator(mode="after")
    def _unique_rank(self) -> RoutingSettings:
        if len(set(self.rank_by)) != len(self.rank_by):
            raise ValueError("rankBy entries must be unique")
        return self


class CacheSettings(_Model):
    """The response cache. Only deterministic requests (temperature 0) are cached,
    unless their task type is listed in ``alwaysCacheTasks``."""

    enabled: bool = True
    ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1, le=365 * 24 * 3600)
    memory_entries: int = Field(default=10_000, ge=0, le=10_000_000)
    always_cache_tasks: list[str] = Field(default_factory=list, max_length=256)
    never_cache_tasks: list[str] = Field(default_factory=list, max_length=256)


class Budget(_Model):
    """A spending limit in USD for an organization, or for one of its API keys."""

    organization: Organization = "default"
    api_key: Name | None = Field(default=None, description="A key name; none: the organization")
    daily_usd: DecimalString | None = None
    monthly_usd: DecimalString | None = None

    @field_validator("daily_usd", "monthly_usd", mode="before")
    @classmethod
    def _amounts_as_strings(cls, value: Any) -> Any:
        return None if value is None else _price(value)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.daily_usd is None and self.monthly_usd is None:
            raise ValueError("give dailyUsd, monthlyUsd or both")
        return self


class RoutingTable(_Model):
    api_version: Literal["switchyard.dev/v1alpha1"]
    kind: Literal["RoutingTable"]
    providers: list[Provider] = Field(default_factory=list)
    models: list[Model] = Field(default_factory=list)
    templates: list[Template] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(default_factory=list)
    routing: RoutingSettings = RoutingSettings()
    cache: CacheSettings = CacheSettings()
    budgets: list[Budget] = Field(default_factory=list)
