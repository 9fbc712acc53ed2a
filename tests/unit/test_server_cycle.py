"""How the router's server sends each answer (``server._raising_when_gone``), on
uvicorn's own request-response cycle writing to a transport that records its writes."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected

from switchyard.router.server import _raising_when_gone


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def cycle(method: str = "POST") -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    scope: Any = {"type": "http", "method": method, "path": "/", "http_version": "1.1"}
    log = logging.getLogger("test")
    c = RequestResponseCycle(
        scope, transport, FlowControl(transport), log, log, False, [], asyncio.Event(),  # type: ignore[arg-type]
        False, True, lambda: None,
    )  # fmt: skip
    c.send = _raising_when_gone(c)  # type: ignore[method-assign]
    return c, transport


STREAM_START = {"type": "http.response.start", "status": 200, "headers": []}
CHUNK = {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}


def test_a_request_is_freed_as_it_ends_not_left_to_the_cyclic_collector() -> None:
    """The cycle holds its wrapped send; were the wrapper to hold the cycle back, every
    request would be garbage that waits for the collector (and its pauses)."""
    c, _ = cycle()
    gone = weakref.ref(c)
    gc.disable()
    try:
        del c
        assert gone() is None
    finally:
        gc.enable()


def test_a_streamed_chunk_to_a_client_gone_raises_and_other_messages_pass() -> None:
    async def scenario() -> list[bytes]:
        c, transport = cycle()
        await c.send(STREAM_START)  # type: ignore[arg-type]
        await c.send(CHUNK)  # type: ignore[arg-type]
        c.disconnected = True
        with pytest.raises(ClientDisconnected):
            await c.send(CHUNK)  # type: ignore[arg-type]
        await c.send({"type": "http.response.body", "body": b""})  # type: ignore[arg-type]
        return transport.writes

    writes = asyncio.run(scenario())
    assert len(writes) == 2 and writes[1] == b"9\r\ndata: 1\n\n\r\n"
