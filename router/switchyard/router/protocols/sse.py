"""Server-sent events, as the surfaces write them to clients."""

from __future__ import annotations

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
