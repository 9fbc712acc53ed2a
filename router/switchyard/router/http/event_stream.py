"""A server-sent event stream as an ASGI response, with no task per stream.

Starlette's ``StreamingResponse`` learns that a client left through an anyio task
group that waits on ``receive`` beside the writer: on this path that costs more than
relaying the stream itself. The router's server instead raises ``ClientDisconnected``
(an ``OSError``) from ``send`` for a streamed chunk once the client has gone (see
``server._Cycle``), so the stream stops at its next chunk: the provider is
hung up on and the stream settled at once, as the client left mid-answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from switchyard.router.http.json_answer import raw_headers

_SSE = (b"content-type", b"text/event-stream; charset=utf-8")


class Last(bytes):
    """A stream's last bytes, yielded as its generator ends: the stream's end goes out
    with them, one write where the bytes and the end would be two."""

    __slots__ = ()


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        headers: Mapping[str, str],  # lowercase names
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        self.chunks = chunks
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.raw_headers = raw_headers([_SSE], headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            more = True
            async for chunk in self.chunks:
                more = type(chunk) is not Last
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client left: what is still to come goes nowhere
        finally:
            await self.chunks.aclose()
            await self.on_close()
