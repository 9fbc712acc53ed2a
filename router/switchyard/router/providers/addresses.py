"""Which addresses a provider may be reached at: an ``LLMProvider`` is a tenant's, and its
``baseUrl`` must not make the router (or the operator's probes) a way into the cluster or
its cloud's metadata service.

- Link-local and metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
  100.100.100.200, ``metadata.google.internal``) are refused for every provider type.
- A cloud type (``anthropic``, ``openai``, ``azure_openai``: its API is on the internet)
  may not reach loopback, private, shared (CGNAT), unique-local or unspecified
  addresses, nor a cluster's own names (``*.svc``, ``*.cluster.local``, ``kubernetes``).
- An in-cluster type (``vllm``, ``ollama``) may: reaching them there is its purpose.

An address inside one of the table's ``routing.providerNetworks.allowCIDRs`` is allowed
whatever it is. The literal host is checked when the adapter is made (a refused
provider is unusable, and says why); every address a name resolves to is checked when
a connection is made (``GuardedResolver``), so a public name pointing at a private
address is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from switchyard.router.contract import Network, address_refusal


class RefusedAddress(OSError):
    """A connection the address policy does not allow: never attempted."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a provider may reach: a name whose
    every address is refused fails to connect with ``RefusedAddress``."""

    def __init__(self, provider_type: str, allowed: Sequence[Network]) -> None:
        self.provider_type = provider_type
        self.allowed = tuple(allowed)
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [
            r
            for r in found
            if address_refusal(self.provider_type, ipaddress.ip_address(r["host"]), self.allowed)
            is None
        ]
        if not kept:
            reason = address_refusal(
                self.provider_type, ipaddress.ip_address(found[0]["host"]), self.allowed
            )
            raise RefusedAddress(f"{host} resolves to {reason or 'no address'}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
