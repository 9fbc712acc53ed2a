"""Faults a fake provider can inject into completion requests.

A fault is consumed by exactly one completion request (chat/messages
endpoint); queue them with ``FakeServer.push`` or make one sticky with
``FakeServer.set_default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "error", "stall", "cut", "reset", "stream_error", "stall_mid", "malformed", "trickle"
]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 0
    retry_after: float | None = None
    message: str | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    retry_after_date: bool = False

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        as_date: bool = False,
    ) -> Fault:
        """Answer with the provider's own error body for ``status``.

        ``retry_after`` (seconds) adds the provider's Retry-After header(s);
        without it no Retry-After header is sent. ``as_date``: Retry-After is the
        HTTP date that many seconds ahead (RFC 9110 allows either), alone.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"error status must be 4xx/5xx, got {status}")
        return cls(
            "error",
            status=status,
            retry_after=retry_after,
            message=message,
            retry_after_date=as_date,
        )

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before sending response headers, then answer normally."""
        return cls("stall", seconds=seconds)

    @classmethod
    def cut(cls, after_chunks: int) -> Fault:
        """Streaming: send N content chunks then close the connection without a
        terminator. Non-streaming: close the connection halfway through the body."""
        return cls("cut", after_chunks=after_chunks)

    @classmethod
    def reset(cls) -> Fault:
        """Close the TCP connection (RST) without sending any response."""
        return cls("reset")

    @classmethod
    def stream_error(cls, after_chunks: int) -> Fault:
        """Streaming: after N content chunks emit the provider's in-stream error
        and end the stream. Non-streaming requests get the provider's 500 body."""
        return cls("stream_error", after_chunks=after_chunks)

    @classmethod
    def stall_mid(cls, after_chunks: int, seconds: float) -> Fault:
        """Streaming: after N content chunks, send nothing for ``seconds``, then go on.
        Non-streaming: send the headers and half the body, then the same pause."""
        return cls("stall_mid", after_chunks=after_chunks, seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """A 200 whose body (or whose first streamed event) is broken JSON."""
        return cls("malformed")

    @classmethod
    def trickle(cls, seconds: float) -> Fault:
        """A slow but steady answer: a stream's chunks spread over ``seconds``, each gap
        far under any first-token timeout; a plain answer sent after ``seconds``."""
        return cls("trickle", seconds=seconds)
