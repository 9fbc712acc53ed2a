"""The floor a gateway's hot path is measured against: a bare ASGI app that passes each
request to the upstream and the answer back, with nothing in between (no keys, no
routing, no accounting), on the same server (uvicorn, httptools, uvloop) and the same
HTTP client (one pooled aiohttp session) as the router.

    FLOOR_PORT=8090 FLOOR_UPSTREAM=http://127.0.0.1:8001 python tests/bench/floor.py

A streamed answer is relayed chunk by chunk as it arrives.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import uvicorn

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001")
_session: aiohttp.ClientSession | None = None


async def _client() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
        )
    return _session


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    session = await _client()
    async with session.post(
        UPSTREAM + scope["path"], data=body, headers={"content-type": "application/json"}
    ) as r:
        headers = [(b"content-type", r.headers.get("content-type", "").encode())]
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": await r.read()})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("FLOOR_PORT", "8090")),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
