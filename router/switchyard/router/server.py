"""The HTTP server: uvicorn's httptools protocol, bounded in what one connection may hold.

Before the app sees a request, the server has already spent a file descriptor and
memory on it, and no API key is needed to make it spend them. So each connection is
bounded, and each bound is answered in the router's JSON error shape:

- ``max_connections``: a connection beyond it gets 503 at once and is closed;
- ``max_header_bytes``: a request line and headers larger than this get 431. They are
  counted as they arrive, so an unfinished 48 MB header holds no more than the limit;
- ``header_timeout``: a request's head must be complete this many seconds after its
  first byte (after the connection opened, for its first request), else 408; a
  connection that sent nothing is closed without an answer;
- ``body_timeout``: its body must be complete this many seconds after the head, else
  408. A deadline for the whole, not for each byte: a body trickled a byte at a
  time is still cut off.

Whatever the HTTP parser rejects (a bad Content-Length, a control character in a
header) gets a JSON 400 naming the parser's complaint, instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import types
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import ClientDisconnected

from switchyard.router.errors import (
    BadRequest,
    HeadersTooLarge,
    InternalError,
    RequestTimeout,
    SwitchyardError,
    TooManyConnections,
)
from switchyard.router.http.errors import error_body, flavor_of
from switchyard.router.metrics import Metrics

log = logging.getLogger("switchyard.router")

#: How often the deadlines of all connections are checked. One timer for the server,
#: not one per request: a deadline is a float on the connection, checked here.
TICK_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one router process lets its clients hold; see the module's docstring."""

    max_connections: int = 4096
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0


class _Answered(Exception):
    """Raised inside a parser callback to stop parsing once the server has answered."""


class LimitedProtocol(HttpToolsProtocol):
    """One connection. ``limits`` and ``metrics`` are set per server by ``protocol_for``."""

    limits: ClassVar[ServerLimits] = ServerLimits()
    metrics: ClassVar[Metrics | None] = None
    _sweeping: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answered = False
        self._in_head = True
        self._head_bytes = 0  # bytes read since the current request began (a bound on its head)
        self._chunk = 0  # the length of the read being parsed
        self._deadline = 0.0  # loop time; 0: none
        self._deadline_for = ""  # "head" or "body"

    # -- the connection ---------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.metrics is not None:
            self.metrics.connections_open.inc()
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            self.loop.call_later(TICK_SECONDS, cls._sweep, self.loop, self.connections)
        if len(self.connections) > self.limits.max_connections:
            self._answer(
                TooManyConnections(
                    f"the server holds {self.limits.max_connections} connections, its limit; "
                    "retry shortly"
                ),
                "too_many_connections",
            )
            return
        self._deadline = self.loop.time() + self.limits.header_timeout
        self._deadline_for = "head"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.metrics is not None:
            self.metrics.connections_open.dec()
        self._deadline = 0.0
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        if self._in_head:
            self._head_bytes += self._chunk
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here: the request is served as plain HTTP/1.1, and
            # the parser, stopped at the upgrade, reads nothing more on this connection.
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            if self._answered:
                return
            cause = exc.__context__
            if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
                log.error("the HTTP server failed on a request", exc_info=cause)
                self._answer(InternalError("the server failed reading the request"), "malformed")
            else:
                self._answer(BadRequest(f"malformed HTTP request: {exc}"), "malformed")
            return
        if self._in_head and not self._answered and self._head_bytes > self.limits.max_header_bytes:
            self._answer(self._too_large(), "headers_too_large")

    # -- parser callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        # At most what arrived in the read that began it (``data_received`` adds later reads).
        self._head_bytes = self._chunk
        if self._deadline_for != "head":
            self._deadline = self.loop.time() + self.limits.header_timeout
            self._deadline_for = "head"

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The bytes read since the request began bound its head; only a head that may be
        # too large is measured.
        if self._head_bytes > self.limits.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.limits.max_header_bytes:
                self._answer(self._too_large(), "headers_too_large")
                raise _Answered
        self._deadline = self.loop.time() + self.limits.body_timeout
        self._deadline_for = "body"
        _uvicorn_headers_complete(self)

    def on_message_complete(self) -> None:
        self._deadline = 0.0
        self._deadline_for = ""
        super().on_message_complete()

    # -- limits -------------------------------------------------------------
    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
        )

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, LimitedProtocol) and 0 < conn._deadline <= now:
                conn._deadline_passed()
        loop.call_later(TICK_SECONDS, cls._sweep, loop, connections)

    def _deadline_passed(self) -> None:
        self._deadline = 0.0
        if self._deadline_for == "head":
            if self._head_bytes == 0 and getattr(self, "url", b"") == b"":
                # Nothing of a request arrived: an idle connection, closed quietly.
                if self.metrics is not None:
                    self.metrics.connections_refused.labels("header_timeout").inc()
                self._answered = True
                self.transport.close()
                return
            seconds = self.limits.header_timeout
            self._answer(
                RequestTimeout(f"the request's headers did not arrive within {seconds:g}s"),
                "header_timeout",
            )
        else:
            seconds = self.limits.body_timeout
            self._answer(
                RequestTimeout(f"the request's body did not arrive within {seconds:g}s"),
                "body_timeout",
                current=True,
            )

    def _answer(self, error: SwitchyardError, reason: str, *, current: bool = False) -> None:
        """Answer ``error`` (when the connection may still carry an answer) and close.

        ``current``: the error is about the request the app is serving (its body), so
        the answer is due if the app has not started its own.
        """
        self._answered = True
        self._deadline = 0.0
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()
        log.debug("closing a connection from %s: %s", self.client, error.message)
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if not busy or (current and cycle is not None and not cycle.response_started):
            path = getattr(self, "url", b"").partition(b"?")[0].decode("latin-1")
            body = orjson.dumps(error_body(error, flavor_of(path)))
            head = [STATUS_LINE[error.status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            for name_s, value_s in error.headers().items():
                head += [name_s.encode(), b": ", value_s.encode(), b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(head))
        if cycle is not None and busy:
            # The app is reading this request: it sees the client gone, and whatever it
            # answers now goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


#: The bytes a header name, and a value, may hold: deleting them from all the names (or
#: values) leaves exactly what uvicorn's ``HEADER_RE`` (``HEADER_VALUE_RE``) would find,
#: in one pass with no regular expression.
_NAME_OK = bytes(b for b in range(256) if not HEADER_RE.match(bytes([b])))
_VALUE_OK = bytes(b for b in range(256) if not HEADER_VALUE_RE.match(bytes([b])))
#: Names whose values change how the answer is framed, beside its length.
_READ = frozenset((b"transfer-encoding", b"connection"))
_COLON = b": ".join
_CRLF = b"\r\n"
#: A chunk of a chunked answer, from its length and bytes, and the answer's end, as
#: uvicorn frames them.
_CHUNK = b"%x\r\n%b\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class _Cycle(RequestResponseCycle):
    """uvicorn's cycle of one request and its answer, with these changes to ``send``:

    - a streamed body chunk for a client that has left raises ``ClientDisconnected`` (an
      ``OSError``), as ASGI 2.4 has it, so a stream learns of it at its next chunk
      without a task watching ``receive`` (see ``http.event_stream``); other messages
      keep uvicorn's silence;
    - the answer's head is made as uvicorn makes it, but its header names and values are
      each checked in one pass over all of them, not two searches a header (a
      completion's answer has eight): the same checks, and the same errors; names
      already in lowercase that do not change how the answer is framed are written as
      they are, not read one by one;
    - a head that gives the body's length is held until the body comes, and a body that
      comes whole goes out with it in one write (one system call, and one segment for
      the client to read, where uvicorn makes two of each);
    - a chunk of a chunked answer with more to come is written at once, past the checks
      that only an answer's first and last messages need;
    - a chunked answer's head is held for its first chunk, when the app sends that
      before it next waits (the router's streams do: their first event is in hand when
      they begin), and goes out with it in one write; otherwise it goes out alone at
      the event loop's next turn. An answer whose first body message is its last
      (head, chunk and end) is one write.

    The protocol makes its cycles these (``_uvicorn_headers_complete``).
    ``tests/unit/test_server_cycle.py`` holds this to uvicorn's own writes and state.
    """

    #: The head of an answer, waiting for its body or first chunk (``_head``).
    _held: bytes | None = None

    async def send(self, message: Any) -> None:
        if self.disconnected:
            if message.get("more_body"):
                raise ClientDisconnected("the client closed the connection")
            return
        if self.chunked_encoding and message.get("more_body") and not self.flow.write_paused:
            # A streamed chunk (most of what a stream sends), written as uvicorn writes
            # it, without the checks that only the first and last messages need.
            if message["type"] != "http.response.body" or self.response_complete:
                await super().send(message)  # uvicorn's errors
                return
            body = message.get("body", b"")
            if body and self.scope["method"] != "HEAD":
                chunk = _CHUNK % (len(body), body)
                held = self._held
                if held is not None:
                    self._held = None
                    chunk = held + chunk
                self.transport.write(chunk)
            return
        held = self._held
        if held is not None:
            self._held = None
            if self._whole(held, message):
                return
            self.transport.write(held)
        elif (
            message["type"] == "http.response.start"
            and not self.response_started
            and not self.flow.write_paused
            and not self.access_log
        ):
            self._head(message)
            return
        await super().send(message)

    def _whole(self, head: bytes, message: Any) -> bool:
        """Write the held head and a body that is all of the answer in one (for a
        chunked answer, its one chunk and its end), and finish the answer as uvicorn
        does; False, having written nothing, for any other body (more to come, a length
        that is not the head's) or message."""
        if message["type"] != "http.response.body" or message.get("more_body", False):
            return False
        body = message.get("body", b"")
        if self.flow.write_paused:
            return False
        if self.chunked_encoding:
            chunk = _CHUNK % (len(body), body) if body else b""
            self.transport.write(head + chunk + _LAST_CHUNK)
        elif len(body) == self.expected_content_length:
            self.transport.write(head + body)
        else:
            return False
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True

    def _head(self, message: Any) -> None:
        """``RequestResponseCycle.send`` for ``http.response.start`` (uvicorn 0.55)."""
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        headers = self.default_headers + list(message.get("headers", []))
        names = [name for name, _ in headers]
        joined = b"".join(names)
        if joined.translate(None, _NAME_OK):
            raise RuntimeError("Invalid HTTP header name.")
        # Every header as its line, the last without its line end: with the names
        # checked, the only bytes a value may not hold left in it are the line ends.
        lines = _CRLF.join(map(_COLON, headers))
        if lines.translate(None, _VALUE_OK) != _CRLF * (len(headers) - 1):
            raise RuntimeError("Invalid HTTP header value.")
        if joined.islower() and _READ.isdisjoint(names):
            # Names already in lowercase, and none the loop below reads but the length
            # (every answer the router makes): the lines as they are.
            content = [STATUS_LINE[status], lines, _CRLF]
            if b"content-length" in names and self.chunked_encoding is None:
                length = headers[names.index(b"content-length")][1]
                self.expected_content_length = int(length.decode())
                self.chunked_encoding = False
            if not self.keep_alive:
                content.append(b"connection: close\r\n")
        else:
            content = self._lines(status, headers)
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        if self.scope["method"] == "HEAD" or self.chunked_encoding is None:
            self.transport.write(b"".join(content))
        else:
            # The body will say how it goes out; a stream's first chunk is usually sent
            # before the app next waits, and goes out with it.
            self._held = b"".join(content)
            if self.chunked_encoding:
                asyncio.get_running_loop().call_soon(self._unhold)

    def _unhold(self) -> None:
        """A chunked answer's head that no chunk came for before the app waited: alone."""
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def _lines(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        """The head's status line and header lines as uvicorn writes them, reading every
        name for the length, the transfer encoding and the connection."""
        content = [STATUS_LINE[status]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                self.keep_alive = False
                has_connection_close = True
            content.extend([name, b": ", value, b"\r\n"])
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        return content


#: uvicorn's ``on_headers_complete``, making each request's cycle a ``_Cycle``: its own
#: code, run in a copy of its module's namespace in which the cycle class is the router's.
#: (Changing a made cycle's class instead would cost every later use of its attributes.)
_uvicorn_headers_complete = types.FunctionType(
    HttpToolsProtocol.on_headers_complete.__code__,
    {**vars(httptools_impl), "RequestResponseCycle": _Cycle},
    "on_headers_complete",
)


def protocol_for(limits: ServerLimits, metrics: Metrics | None) -> type[LimitedProtocol]:
    """A protocol class bound to one server's limits and metrics."""
    return type(
        "SwitchyardProtocol",
        (LimitedProtocol,),
        {"limits": limits, "metrics": metrics, "_sweeping": False},
    )


class _OneLog:
    """Keep an error the app already answered and logged from being logged again.

    Starlette answers an unhandled exception with the router's JSON 500 (and the
    router logs it) and then re-raises it for the server, which would log it again.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket, inheritable by worker processes."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def config(
    app: Any,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    log_level: str = "info",
    shutdown_timeout: int = 30,
) -> uvicorn.Config:
    """The uvicorn configuration every router runs with (tests included)."""
    services = getattr(app, "services", None)
    metrics = getattr(services, "metrics", None)
    return uvicorn.Config(
        _OneLog(app),
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_for(limits or ServerLimits(), metrics),
        # No WebSocket routes: uvicorn would otherwise import a WebSocket stack (about
        # 2 MiB) to upgrade connections nothing here accepts.
        ws="none",
        log_level=log_level,
        access_log=False,
        # No "server: uvicorn": callers learn nothing of the software behind the
        # router, and each answer has one header fewer for uvicorn to check.
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        # On SIGTERM: stop accepting, let requests and streams in flight finish (for up
        # to this long), then the app's shutdown writes the usage records it holds.
        timeout_graceful_shutdown=shutdown_timeout,
    )
