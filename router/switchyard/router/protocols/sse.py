"""Server-sent events, as the surfaces write them to clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from switchyard.router.core.chat import StreamEvent


class StreamEncoder(Protocol):
    """Turns one stream's neutral events into one protocol's SSE bytes."""

    #: Response headers particular to this protocol (beyond the SSE ones).
    headers: dict[str, str]

    def open(self) -> bytes:
        """What goes out before the first event (may be empty)."""

    def event(self, event: StreamEvent) -> bytes:
        """One event's bytes (may be empty)."""

    def error(self, body: dict[str, Any]) -> bytes:
        """An error after the stream began, as this protocol reports it."""

    def close(self) -> bytes:
        """What ends a stream that finished."""


def named(name: bytes, data: Any) -> bytes:
    """``event: name`` with its JSON data."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def data_only(data: Any) -> bytes:
    """A ``data:`` line with JSON, no event name (OpenAI's style)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


class WholeEvents:
    """Bytes as they arrive → whole server-sent events (through their blank line); a
    partial event waits for the rest. CRLF line ends become LF."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def take(self, block: bytes) -> bytes:
        data = self.rest + block if self.rest else block
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self.rest = data
            return b""
        self.rest = data[end + 2 :]
        return data[: end + 2]


class Renamer:
    """Rewrites a relayed stream's id and model to the router's, once it has read them
    from the stream's first event that names them (a cheap bytes replace after that).

    ``ids`` (given with each block) reads a block's first event naming an id and a
    model and returns them, or None.
    """

    __slots__ = ("_id", "_model", "_swaps")

    def __init__(self, our_id: str, our_model: str) -> None:
        self._id = our_id
        self._model = our_model
        self._swaps: list[tuple[bytes, bytes]] | None = None

    def __call__(self, data: bytes, ids: Callable[[bytes], tuple[str, str] | None]) -> bytes:
        swaps = self._swaps
        if swaps is None:
            found = ids(data)
            if found is None:
                return data
            swaps = self._swaps = []
            for key, theirs, ours in (("id", found[0], self._id), ("model", found[1], self._model)):
                if theirs and theirs != ours:
                    name = b'"' + key.encode() + b'":'
                    swaps.append((name + orjson.dumps(theirs), name + orjson.dumps(ours)))
        for theirs_b, ours_b in swaps:
            data = data.replace(theirs_b, ours_b)
        return data
