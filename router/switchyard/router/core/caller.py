"""Who is asking: the organization and scopes a bearer key resolves to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    key_name: str
    organization: str
    scopes: frozenset[str]

    @property
    def key(self) -> tuple[str, str]:
        """The API key as limits count it: (organization, key name)."""
        return (self.organization, self.key_name)
