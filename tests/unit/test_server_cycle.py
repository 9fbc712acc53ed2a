"""The router's server wraps each request's ``send`` (``server._raising_when_gone``)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from uvicorn.protocols.utils import ClientDisconnected

from switchyard.router.server import _raising_when_gone


class Cycle:
    """What the wrapper reads of uvicorn's request-response cycle."""

    def __init__(self) -> None:
        self.disconnected = False
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def test_a_request_is_freed_as_it_ends_not_left_to_the_cyclic_collector() -> None:
    """The cycle holds its wrapped send; were the wrapper to hold the cycle back, every
    request would be garbage that waits for the collector (and its pauses)."""
    cycle = Cycle()
    cycle.send = _raising_when_gone(cycle)  # type: ignore[method-assign]
    gone = weakref.ref(cycle)
    gc.disable()
    try:
        del cycle
        assert gone() is None
    finally:
        gc.enable()


def test_a_streamed_chunk_to_a_client_gone_raises_and_other_messages_pass() -> None:
    cycle = Cycle()
    send = _raising_when_gone(cycle)
    start = {"type": "http.response.start", "status": 200, "headers": []}
    chunk = {"type": "http.response.body", "body": b"x", "more_body": True}
    asyncio.run(send(start))
    asyncio.run(send(chunk))
    assert cycle.sent == [start, chunk]
    cycle.disconnected = True
    with pytest.raises(ClientDisconnected):
        asyncio.run(send(chunk))
    last = {"type": "http.response.body", "body": b""}
    asyncio.run(send(last))
    assert cycle.sent == [start, chunk, last]
