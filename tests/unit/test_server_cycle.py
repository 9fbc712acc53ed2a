"""How the router's server sends each answer (``server._Cycle``), beside uvicorn's own
request-response cycle, each writing to a transport that records its writes."""

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

from switchyard.router.server import _Cycle


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


DATE = [(b"date", b"Sun, 06 Dec 2026 12:00:00 GMT")]


def cycle(
    method: str = "POST", keep_alive: bool = True, router: bool = True
) -> tuple[RequestResponseCycle, Transport]:
    """A cycle as the router's server makes it (uvicorn's, made a ``_Cycle``), or
    uvicorn's own."""
    transport = Transport()
    scope: Any = {"type": "http", "method": method, "path": "/", "http_version": "1.1"}
    log = logging.getLogger("test")
    c = RequestResponseCycle(
        scope, transport, FlowControl(transport), log, log, False, DATE, asyncio.Event(),  # type: ignore[arg-type]
        False, keep_alive, lambda: None,
    )  # fmt: skip
    if router:
        c.__class__ = _Cycle
    return c, transport


STREAM_START = {"type": "http.response.start", "status": 200, "headers": []}
CHUNK = {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}


def test_a_request_is_freed_as_it_ends_not_left_to_the_cyclic_collector() -> None:
    """Nothing the router adds to a cycle refers back to it: were it to, every request
    would be garbage that waits for the collector (and its pauses)."""
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
    # The head went out with the first chunk; nothing after the client left.
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")


#: Heads an answer may have, each with the body messages that follow it.
HEADS: list[tuple[str, int, list[tuple[bytes, bytes]], list[dict[str, Any]]]] = [
    ("POST", 200, [(b"content-type", b"application/json"), (b"content-length", b"2")],
     [{"type": "http.response.body", "body": b"{}"}]),
    ("POST", 200, [(b"Content-Type", b"text/event-stream"), (b"X-Switchyard-Model", b"m")],
     [CHUNK, {"type": "http.response.body", "body": b""}]),
    ("POST", 200, [(b"content-length", b"5")],
     [{"type": "http.response.body", "body": b"ab", "more_body": True},
      {"type": "http.response.body", "body": b"cde"}]),
    ("POST", 200, [(b"content-type", b"text/event-stream")],
     [CHUNK, {"type": "http.response.body", "body": b"", "more_body": True}, CHUNK,
      {"type": "http.response.body", "body": b"data: 2\n\n"}]),
    ("HEAD", 200, [(b"transfer-encoding", b"chunked")],
     [CHUNK, {"type": "http.response.body", "body": b""}]),
    ("POST", 200, [(b"transfer-encoding", b"chunked")],
     [{"type": "http.response.body", "body": b"abc"}]),
    ("POST", 200, [(b"connection", b"keep-alive, Close"), (b"content-length", b"0")],
     [{"type": "http.response.body", "body": b""}]),
    ("HEAD", 200, [(b"content-type", b"application/json")],
     [{"type": "http.response.body", "body": b""}]),
    ("POST", 204, [], [{"type": "http.response.body", "body": b""}]),
    ("POST", 200, [(b"content-length", b"2"), (b"x-a", b""), (b"content-length", b"7")],
     [{"type": "http.response.body", "body": b"{}"}]),
    ("POST", 200, [(b"Content-Length", b"2"), (b"x-a", b"1")],
     [{"type": "http.response.body", "body": b"{}"}]),
    ("POST", 200, [[b"x-a", b"1"], (b"x-b", b"\t2")],
     [CHUNK, {"type": "http.response.body", "body": b""}]),
    ("POST", 304, [(b"etag", b'"x"')], [{"type": "http.response.body", "body": b""}]),
]  # fmt: skip


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(("method", "status", "headers", "body"), HEADS)
def test_an_answer_is_written_as_uvicorn_writes_it(
    method: str,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: list[dict[str, Any]],
    keep_alive: bool,
) -> None:
    """The same bytes, and the same state after, for the router's head as uvicorn's own
    (in fewer writes: ``test_an_answer_of_known_length_is_one_write``)."""

    async def run(router: bool) -> tuple[list[bytes], dict[str, Any]]:
        c, transport = cycle(method, keep_alive, router)
        await c.send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[typeddict-item]
        for message in body:
            await c.send(message)  # type: ignore[arg-type]
        state = {
            k: getattr(c, k)
            for k in (
                "response_started", "response_complete", "chunked_encoding",
                "expected_content_length", "keep_alive", "waiting_for_100_continue",
            )
        }  # fmt: skip
        return [b"".join(transport.writes), b"closed" if transport.closed else b"open"], state

    ours, theirs = asyncio.run(run(True)), asyncio.run(run(False))
    assert ours == theirs
    assert ours[0][0].startswith(b"HTTP/1.1 %d " % status)


def test_a_chunk_after_the_end_or_before_the_head_is_refused_as_uvicorn_refuses_it() -> None:
    async def run(router: bool, messages: list[dict[str, Any]]) -> str:
        c, _ = cycle(router=router)
        try:
            for message in messages:
                await c.send(message)  # type: ignore[arg-type]
        except RuntimeError as exc:
            return str(exc)
        return "accepted"

    end = {"type": "http.response.body", "body": b""}
    for messages in ([STREAM_START, CHUNK, end, CHUNK], [CHUNK], [STREAM_START, STREAM_START]):
        ours, theirs = asyncio.run(run(True, messages)), asyncio.run(run(False, messages))
        assert ours == theirs != "accepted"


def test_an_answer_of_known_length_is_one_write() -> None:
    """Head and body in one write when the body comes whole; in parts, the head first
    and each part as it comes; a body shorter than its length refused as uvicorn
    refuses it."""

    async def run(
        headers: list[tuple[bytes, bytes]], bodies: list[dict[str, Any]]
    ) -> tuple[list[bytes], bool]:
        c, transport = cycle()
        await c.send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[typeddict-item]
        for message in bodies:
            await c.send(message)  # type: ignore[arg-type]
        return transport.writes, c.response_complete

    length = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    writes, done = asyncio.run(run(length, [{"type": "http.response.body", "body": b"{}"}]))
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n{}") and done
    parts = [
        {"type": "http.response.body", "body": b"{", "more_body": True},
        {"type": "http.response.body", "body": b"}"},
    ]
    writes, done = asyncio.run(run(length, parts))
    assert writes[1:] == [b"{", b"}"] and writes[0].endswith(b"\r\n\r\n") and done
    with pytest.raises(RuntimeError, match="shorter than Content-Length"):
        asyncio.run(run(length, [{"type": "http.response.body", "body": b"{"}]))


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([(b"x-ok", b"fine"), (b"x-bad name", b"v")], "Invalid HTTP header name."),
        ([(b"x-ok", b"fine"), (b"x-bad", b"a\r\nset-cookie: x=1")], "Invalid HTTP header value."),
        ([(b"x-bad", b"\x00")], "Invalid HTTP header value."),
        ([(b"x-bad", b"1\r"), (b"x-ok", b"\n2")], "Invalid HTTP header value."),
        ([(b"x-bad", b"a\nb"), (b"x-ok", b"fine")], "Invalid HTTP header value."),
        ([(b"x-ok", b"fine"), (b"x-bad", b"\x7f")], "Invalid HTTP header value."),
    ],
)
def test_a_head_with_a_bad_header_is_refused_as_uvicorn_refuses_it(
    headers: list[tuple[bytes, bytes]], error: str
) -> None:
    async def run(router: bool) -> list[bytes]:
        c, transport = cycle(router=router)
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        with pytest.raises(RuntimeError, match=error):
            await c.send(start)  # type: ignore[arg-type]
        return transport.writes

    assert asyncio.run(run(True)) == asyncio.run(run(False)) == []


def test_a_stream_head_goes_out_with_its_first_chunk_or_alone_once_the_app_waits() -> None:
    """A chunk sent before the app next waits carries the head; a stream that is one
    message is one write, end included; a head the app sends and then waits after
    goes out alone at the loop's next turn, and its chunks after it."""
    end = {"type": "http.response.body", "body": b""}

    async def run(messages: list[dict[str, Any] | None]) -> tuple[list[bytes], bool]:
        c, transport = cycle()
        for message in messages:
            if message is None:
                await asyncio.sleep(0)  # the app waits: the loop turns
            else:
                await c.send(message)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        return transport.writes, c.response_complete

    writes, done = asyncio.run(run([STREAM_START, CHUNK, CHUNK, end]))
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"] and done

    last = {"type": "http.response.body", "body": b"data: 1\n\n"}
    writes, done = asyncio.run(run([STREAM_START, last]))
    assert len(writes) == 1 and done
    assert writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n")

    empty = {"type": "http.response.body", "body": b"", "more_body": True}
    writes, done = asyncio.run(run([STREAM_START, empty, None, CHUNK, None, end]))
    assert len(writes) == 3 and writes[0].endswith(b"chunked\r\n\r\n") and done
    assert writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]

    writes, done = asyncio.run(run([STREAM_START, None]))
    assert len(writes) == 1 and writes[0].endswith(b"chunked\r\n\r\n") and not done
