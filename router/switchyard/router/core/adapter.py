"""The one interface between the core and the provider adapters.

The core calls providers only through ``Adapter``; ``switchyard.router.providers``
implements it, one module per wire protocol, and the app hands the gateway an
``AdapterFactory`` when it wires things together. So the core never imports an
adapter, and an adapter never reaches into the core beyond the neutral types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from switchyard.router.contract import HealthStatus, Provider, ProviderNetworks
from switchyard.router.core.balance import Balancer
from switchyard.router.core.chat import ChatRequest, ChatResult, StreamEvent
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult


@dataclass(slots=True)
class ProbeResult:
    """One health probe of a provider."""

    status: HealthStatus
    latency_ms: float | None
    checked_at: float
    message: str
    models: list[str] = field(default_factory=list)
    #: Declared models the provider's listing does not hold.
    missing: list[str] = field(default_factory=list)
    #: Not probed, or not connected to: the address policy refuses its address.
    refused: bool = False


class Adapter(Protocol):
    """complete · stream · embed · list models · probe, for one provider."""

    #: The provider as the table describes it now; an edit that does not change how it
    #: is reached replaces this and keeps the adapter (and its connection pool).
    provider: Provider
    #: Why the provider may not be reached at all (its baseUrl's host is one the address
    #: policy refuses); None when it may.
    refused: str | None
    #: Its endpoints and the choice among them, when the table lists several; else None.
    balancer: Balancer | None

    def retarget(self, provider: Provider) -> None:
        """The table's ``provider`` now, reached the same way: its endpoints may differ."""

    @property
    def total_timeout(self) -> float:
        """The longest any call may take, in seconds."""

    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        """One non-streaming completion; raises ``UpstreamError``s."""

    def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        """A streaming completion; the last event is ``Finish``."""

    async def embed(self, req: EmbeddingRequest, model_name: str) -> EmbeddingResult:
        """Embeddings of ``req``'s input; raises ``UpstreamError``s."""

    async def list_models(self) -> list[str]:
        """The model names the provider serves, where its API can say."""

    async def count_tokens(self, req: ChatRequest, model_name: str) -> int | None:
        """The prompt tokens of ``req`` as the provider counts them; None when its
        protocol has no way to ask."""

    async def probe(self, model_names: Sequence[str]) -> ProbeResult:
        """One cheap real request (a model listing where the protocol has one) that
        tells whether the provider answers and serves every model in ``model_names``."""

    async def close(self) -> None:
        """Close the connection pool."""


#: Makes the adapter for a provider, its resolved API key (None: no key) and the networks
#: the table lets providers reach beyond the defaults.
AdapterFactory = Callable[[Provider, str | None, ProviderNetworks | None], Adapter]
