"""The longest a provider's stream may go without a byte, watched with one timer per gap
rather than one per read.

aiohttp's read timeout (``sock_read``) cancels a timer and schedules another for every
read: on a stream whose tokens arrive a read at a time, 1.8 us a read here (uvloop),
a tenth of the router's own work on the read. Once a stream's headers are in, its
provider's adapter turns aiohttp's off and starts a ``ReadWatch``: each read notes the
loop's time, and the one timer, when it fires, looks at when the last read was. It
either ends the stream as aiohttp's timeout would (the same exception, the connection
closed rather than reused), or sets itself for the deadline the last read moved it to.
"""

from __future__ import annotations

import asyncio

import aiohttp


class ReadWatch:
    """Ends ``resp``'s body with aiohttp's read timeout once ``gap`` seconds pass without
    a read: ``saw`` is called for each read, ``stop`` when the body is done with."""

    __slots__ = ("_gap", "_handle", "_loop", "_resp", "last")

    def __init__(self, resp: aiohttp.ClientResponse, gap: float) -> None:
        self._resp = resp
        self._gap = gap
        self._loop = asyncio.get_running_loop()
        connection = resp.connection
        if connection is not None and connection.protocol is not None:
            # aiohttp's own timer, set at the last byte so far, is cancelled by the next
            # read and not set again; if no byte comes first, it ends the stream itself.
            connection.protocol.read_timeout = None
        #: The loop's time of the last read.
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + gap, self._check)

    def saw(self) -> None:
        """A read: the deadline moves on (the timer stays as it is)."""
        self.last = self._loop.time()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        deadline = self.last + self._gap
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self._handle = None
        # As aiohttp's ``ResponseHandler._on_read_timeout``: the connection will not be
        # reused, and the read waiting on the body raises.
        exc = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
        connection = self._resp.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.set_exception(exc)
        self._resp.content.set_exception(exc)
