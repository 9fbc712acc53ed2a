"""How a stream's chunks become ASGI messages (``http.event_stream.EventStream``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from switchyard.router.http.event_stream import EventStream, Last


def messages(chunks: list[bytes]) -> tuple[list[dict[str, Any]], list[str]]:
    """What the stream sends for ``chunks``, and what happened after its last."""
    sent: list[dict[str, Any]] = []
    after: list[str] = []

    async def gen() -> AsyncGenerator[bytes, None]:
        for chunk in chunks:
            yield chunk
        after.append("generator ended")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def closed() -> None:
        after.append("closed")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    stream = EventStream(gen(), {"x-a": "1"}, closed)
    asyncio.run(stream({"type": "http"}, receive, send))  # type: ignore[arg-type]
    return sent, after


def test_the_last_chunk_carries_the_end_and_nothing_is_sent_after_it() -> None:
    sent, after = messages([b"data: 1\n\n", Last(b"data: [DONE]\n\n")])
    assert sent[0]["type"] == "http.response.start"
    assert (b"x-a", b"1") in sent[0]["headers"]
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == [
        (b"data: 1\n\n", True),
        (b"data: [DONE]\n\n", False),
    ]
    assert after == ["generator ended", "closed"]


def test_a_stream_without_a_last_chunk_ends_with_an_empty_one() -> None:
    for chunks in ([b"data: 1\n\n"], []):
        sent, after = messages(chunks)
        bodies = [(m["body"], m["more_body"]) for m in sent[1:]]
        assert bodies == [(c, True) for c in chunks] + [(b"", False)]
        assert after == ["generator ended", "closed"]
