"""Which addresses a provider may be reached at: an ``LLMProvider`` is a tenant's, and its
``baseUrl`` must not make the router (or the operator's probes) a way into the cluster or
its cloud's metadata service. The policy is ``contract.address_refusal``:

- Link-local and metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
  100.100.100.200, ``metadata.google.internal``…) are refused for every provider type,
  whatever the table allows.
- A cloud type (``anthropic``, ``openai``, ``azure_openai``: its API is on the internet)
  may not reach loopback, private, shared (CGNAT), unique-local or other non-global
  addresses, unless the table's ``routing.providerNetworks.allowCIDRs`` holds them.
- An in-cluster type (``vllm``, ``ollama``) may: reaching them there is its purpose.

The literal host is checked when the adapter is made (a refused provider is unusable,
and says why). Every address is checked again where the connection is made, by an
``AddressGuard`` each adapter's connector holds: as its resolver, keeping only the
addresses a name may be reached at (so a public name pointing at a private address, DNS
rebinding, is refused), and as its socket factory, which sees every address a socket
is opened to, literal or resolved. The tenant is told the provider's address is not
allowed; the address itself goes to the log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from switchyard.router.contract import Network, address_refusal

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType

log = logging.getLogger("switchyard.router")


class RefusedAddress(OSError):
    """A connection the address policy does not allow: never attempted. Its text never
    holds the address (it reaches the provider's status); the log does."""


class AddressGuard:
    """The address policy for one provider's connections."""

    def __init__(self, provider: str, provider_type: str, allowed: Sequence[Network]) -> None:
        self.provider = provider
        self.provider_type = provider_type
        self.allowed = tuple(allowed)

    def refusal(self, address: str) -> str | None:
        return address_refusal(
            self.provider_type, ipaddress.ip_address(address.split("%", 1)[0]), self.allowed
        )

    def log_refusal(self, host: str, addresses: Sequence[str], reason: str) -> None:
        """The addresses go to the log, and only there."""
        where = host if list(addresses) == [host] else f"{host} ({', '.join(addresses)})"
        log.warning("provider %s: not connecting to %s: %s", self.provider, where, reason)

    def socket(self, addr_info: AddrInfoType) -> socket.socket:
        """aiohttp's ``socket_factory``: called with each address just before it is
        connected to, whether a name's or a literal's."""
        family, kind, proto, _, sockaddr = addr_info
        address = sockaddr[0]
        reason = self.refusal(address)
        if reason is not None:
            self.log_refusal(address, [address], reason)
            # One text for every refused address, so that a name with several keeps this
            # type through the connection attempts (aiohappyeyeballs merges differing ones).
            raise RefusedAddress("the address policy refuses the provider's address")
        return socket.socket(family=family, type=kind, proto=proto)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a provider may reach: a name whose
    every address is refused fails to connect with ``RefusedAddress``."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        # Looked up when made, so that a test can answer for names of its own.
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self.guard.refusal(r["host"]) is None]
        if not kept:
            reason = self.guard.refusal(found[0]["host"]) if found else None
            reason = reason or "no address"
            self.guard.log_refusal(host, [r["host"] for r in found], reason)
            raise RefusedAddress(f"{host} resolves to {reason}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
