"""The neutral embeddings request and answer (``POST /v1/embeddings``).

An OpenAI-protocol provider gets the client's body as sent and its answer goes back
as it came (``raw``); Ollama's ``/api/embed`` is translated both ways
(``protocols.ollama``), its vectors in ``vectors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from switchyard.router.core.chat import Usage, utf8_size


@dataclass(slots=True)
class EmbeddingRequest:
    model: str | None  # the table's name, or None to let the router choose
    #: Texts, or (OpenAI protocol only) token ids, as the client sent them.
    input: str | list[str] | list[int] | list[list[int]]
    #: The client's other fields (``encoding_format``, ``dimensions``, ``user``, ...).
    params: dict[str, Any] = field(default_factory=dict)
    task_type: str | None = None
    #: A provider of the client's protocol sends its answer on as it arrives
    #: (``EmbeddingResult.body``), rather than read whole.
    relay: bool = False

    @property
    def texts(self) -> list[str] | None:
        """The input as texts; None when it is token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, str) for x in self.input):
            return [str(x) for x in self.input]
        return None

    def sizes(self) -> list[int]:
        """UTF-8 bytes of each input (token ids count as three bytes each): each is
        embedded on its own, so each must fit the model's window; together they are
        what is paid for."""
        texts = self.texts
        if texts is not None:
            return [utf8_size(t) for t in texts]
        ids = self.input
        assert isinstance(ids, list)
        if ids and all(isinstance(x, list) for x in ids):
            return [3 * len(x) for x in ids if isinstance(x, list)]
        return [3 * len(ids)]

    def text_size(self) -> int:
        """UTF-8 bytes to embed in all, for the estimate of what it costs."""
        return sum(self.sizes())


@dataclass(slots=True)
class EmbeddingResult:
    usage: Usage
    upstream_model: str
    #: The OpenAI-protocol provider's answer as sent (its model renamed on the way out).
    raw: dict[str, Any] | None = None
    #: Vectors in input order, from a provider of another protocol.
    vectors: list[list[float]] = field(default_factory=list)
    #: A relayed answer's bytes as the provider sends them (``EmbeddingRequest.relay``):
    #: its usage is known once they have all passed.
    body: AsyncIterator[bytes] | None = None
