"""Base class: an aiohttp server on 127.0.0.1 in a background thread.

Subclasses describe one provider's wire format; this module owns the thread,
request recording, the fault queue, and the mechanics of streaming/cutting.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

from .faults import Fault

_BODY_KEY = web.RequestKey("fake_body", object)
_BAD_JSON_KEY = web.RequestKey("fake_bad_json", bool)
_STARTED_KEY = web.RequestKey("fake_started", float)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, the raw text if it was not JSON, or None when empty


class Dropped(Exception):
    """Raised after the fake has deliberately closed the connection."""


@dataclass(frozen=True)
class StreamScript:
    """Frames of one streamed answer. ``content`` holds one frame per chunk,
    which is what Fault.cut / Fault.stream_error count."""

    head: Sequence[bytes]
    content: Sequence[bytes]
    tail: Sequence[bytes]
    error: Sequence[bytes]  # in-stream error frames, ending the stream
    content_type: str
    headers: Mapping[str, str] | None = None


class FakeServer:
    default_models: ClassVar[tuple[str, ...]] = ()
    url_suffix: ClassVar[str] = ""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        models: list[str] | None = None,
        reply: str | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.models: list[str] = list(models) if models else list(self.default_models)
        self.reply = reply
        self.chunk_delay = chunk_delay
        #: Streams whose caller (the router) hung up before the end.
        self.streams_abandoned = 0
        self.port = 0
        #: Where it listens: another loopback address lets replicas share one port.
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[Fault] = deque()
        self._default: Fault | None = None
        self._completions = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------- public API
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.url_suffix}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def completions(self) -> int:
        """Completion requests (chat/messages endpoints) received, faulted or not."""
        with self._lock:
            return self._completions

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend(faults)

    def set_default(self, fault: Fault | None) -> None:
        with self._lock:
            self._default = fault

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._default = None
            self._completions = 0
            self.streams_abandoned = 0

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(
            target=run, name=f"{type(self).__name__}-server", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            with contextlib.suppress(Exception):  # shutting down regardless
                fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------- subclass hooks
    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def response_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> dict[str, str]:
        """Headers the provider puts on every response (request ids, rate limits)."""
        return {}

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        raise NotImplementedError

    # ------------------------------------------------------------ machinery
    async def _astart(self) -> None:
        # Providers take large prompts (Anthropic: 32 MB); aiohttp would stop at 1 MiB.
        app = web.Application(middlewares=[self._record], client_max_size=32 * 1024 * 1024)
        app.on_response_prepare.append(self._on_prepare)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        # The same port again after ``stop``: a provider that went away and came back.
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[_STARTED_KEY] = time.monotonic()
        raw = await request.read()
        body: Any = None
        bad = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, bad = raw.decode("utf-8", "replace"), True
        request[_BODY_KEY] = body
        request[_BAD_JSON_KEY] = bad
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        with self._lock:
            self._requests.append(record)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except Dropped:
            # The connection is gone; give aiohttp something it will not send.
            return web.Response(status=499)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.response_headers(request, response).items():
            if name not in response.headers:
                response.headers[name] = value

    @staticmethod
    def body(request: web.Request) -> Any:
        return request[_BODY_KEY]

    @staticmethod
    def bad_json(request: web.Request) -> bool:
        return request[_BAD_JSON_KEY]

    @staticmethod
    def elapsed_ms(request: web.Request) -> int:
        return int((time.monotonic() - request[_STARTED_KEY]) * 1000)

    def next_fault(self) -> Fault | None:
        """Count a completion request and take the fault that applies to it."""
        with self._lock:
            self._completions += 1
            if self._queue:
                return self._queue.popleft()
            return self._default

    def check_auth(self, request: web.Request) -> web.Response | None:
        """The provider's answer to a missing or wrong key; None: the key is right.
        Providers without keys (Ollama) accept every request."""
        return None

    async def admit(self, request: web.Request) -> tuple[Fault | None, web.StreamResponse | None]:
        """Take the request's fault and check its key, as every endpoint does first:
        the fault, and the answer already due (the fault's, or a refused key's)."""
        fault = self.next_fault()
        early = await self.apply_fault(request, fault)
        return fault, early if early is not None else self.check_auth(request)

    async def apply_fault(
        self, request: web.Request, fault: Fault | None
    ) -> web.StreamResponse | None:
        """Handle the faults that replace the whole answer; None = carry on."""
        if fault is None:
            return None
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "reset":
            self.abort(request)
        if fault.kind == "error":
            response = self.fault_error(request, fault.status, fault.message, fault.retry_after)
            if fault.retry_after_date and fault.retry_after is not None:
                for name in [n for n in response.headers if n.lower().startswith("retry-after")]:
                    del response.headers[name]
                response.headers["Retry-After"] = email.utils.formatdate(
                    time.time() + fault.retry_after, usegmt=True
                )
            return response
        return None

    @staticmethod
    def abort(request: web.Request) -> None:
        """Close the connection with a TCP RST, sending nothing more."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        raise Dropped

    @staticmethod
    def hang_up(request: web.Request) -> None:
        """Flush what was written, then close the connection (no terminator)."""
        transport = request.transport
        if transport is not None:
            transport.close()
        raise Dropped

    async def send_json(
        self,
        request: web.Request,
        payload: Any,
        *,
        status: int = 200,
        fault: Fault | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        if fault is not None and fault.kind == "malformed":
            data = data[: len(data) // 2]
        if fault is not None and fault.kind == "trickle":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind in ("cut", "stall_mid"):
            resp = web.StreamResponse(status=status, headers=dict(headers or {}))
            resp.content_type = content_type
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            if fault.kind == "cut":
                self.hang_up(request)
            await asyncio.sleep(fault.seconds)
            await resp.write(data[len(data) // 2 :])
            await resp.write_eof()
            return resp
        return web.Response(
            body=data, status=status, content_type=content_type, headers=dict(headers or {})
        )

    async def send_stream(
        self, request: web.Request, script: StreamScript, fault: Fault | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=dict(script.headers or {}))
        resp.headers["Content-Type"] = script.content_type
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        if fault is not None and fault.kind == "malformed":
            sse_format = script.content_type.startswith("text/event-stream")
            await resp.write(b'data: {"broken\n\n' if sse_format else b'{"broken\n')
        for head_frame in script.head:
            await resp.write(head_frame)
        breaks_at = pauses_at = -1
        delay = self.chunk_delay
        content = list(script.content)
        if fault is not None and fault.kind in ("cut", "stream_error"):
            breaks_at = min(max(fault.after_chunks, 0), len(content))
        elif fault is not None and fault.kind == "stall_mid":
            pauses_at = min(max(fault.after_chunks, 0), len(content))
        elif fault is not None and fault.kind == "trickle":
            delay = fault.seconds / max(len(content), 1)
        try:
            for index, frame in enumerate([*content, None]):
                if index == pauses_at and fault is not None:
                    await asyncio.sleep(fault.seconds)
                if index == breaks_at and fault is not None:
                    if fault.kind == "cut":
                        self.hang_up(request)
                    for err in script.error:
                        await resp.write(err)
                    await resp.write_eof()
                    return resp
                if frame is None:
                    break
                await resp.write(frame)
                if delay:
                    await asyncio.sleep(delay)
            for frame in script.tail:
                await resp.write(frame)
            await resp.write_eof()
        except ConnectionResetError:
            self.streams_abandoned += 1
        return resp


async def respond(
    server: FakeServer,
    request: web.Request,
    fault: Fault | None,
    *,
    stream: bool,
    script: Any,
    payload: Any,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send a planned answer, streamed (``script()``) or not (``payload()``)."""
    if stream:
        built: StreamScript = script()
        return await server.send_stream(request, built, fault)
    if fault is not None and fault.kind == "stream_error":
        return server.fault_error(request, 500, fault.message, None)
    return await server.send_json(request, payload(), fault=fault, headers=headers)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event frame."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def ndjson(data: Any) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()
