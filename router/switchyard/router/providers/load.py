"""Each endpoint's live load, scraped from its model server's ``/metrics``.

One task per endpoint of a provider with endpoints (``core.balance``), every
``INTERVAL`` seconds while the provider is in use (it idles ``IDLE_AFTER`` seconds after
the last call), over the adapter's own pooled session and so through its address
policy. An endpoint whose metrics cannot be reached at all is taken out alone at once,
before a call has to find out; two such scrapes in a row (a pod gone with its network,
whose address answers nothing) also give up the calls waiting on it, which go to
another endpoint rather than wait for their own timeout. A server without metrics
(Ollama; llama.cpp without ``--metrics``) is asked again only every ``NO_METRICS_RETRY``
seconds, and its calls are balanced on the router's own in-flight counts. A llama.cpp
server is also asked once for its ``/props``, whose ``total_slots`` lets each
conversation's calls name their slot (``core.slots``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson

from switchyard.router.core.balance import Balancer, Endpoint
from switchyard.router.core.slots import SlotTable
from switchyard.router.errors import UpstreamError
from switchyard.router.protocols.server_metrics import parse_load

if TYPE_CHECKING:
    from switchyard.router.providers.base import HTTPAdapter

log = logging.getLogger("switchyard.router")

INTERVAL = 0.25
IDLE_AFTER = 30.0
NO_METRICS_RETRY = 60.0
#: Scrapes in a row that cannot connect before the calls waiting on an endpoint are
#: given up: one may be a blip; two, a quarter of a second apart, are a gone address.
LOST_AFTER = 2
#: The most of one exposition read: vLLM's is tens of KiB.
MAX_METRICS_BYTES = 1024 * 1024
#: The most of llama.cpp's ``/props`` read: its chat template and settings, a few KiB.
MAX_PROPS_BYTES = 256 * 1024
_TIMEOUT = aiohttp.ClientTimeout(total=1.0, sock_connect=0.5)


class Scrapers:
    """The scraping tasks of one adapter's endpoints."""

    def __init__(self, adapter: HTTPAdapter) -> None:
        self.adapter = adapter
        self._tasks: dict[str, tuple[Endpoint, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Endpoints asked for their slots already (asked once, answered or not).
        self._props_asked: set[Endpoint] = set()

    def sync(self, serving: bool = False) -> None:
        """One task per current endpoint: started for new ones, stopped for gone ones.
        The first call made on the endpoints (``serving``) starts them on its event loop;
        a new table read later (on that loop) starts its new endpoints' tasks. A table
        read before the server runs, or on another thread's loop, starts none."""
        balancer = self.adapter.balancer
        wanted = {} if balancer is None else balancer.endpoints
        for address, (ep, task) in list(self._tasks.items()):
            if wanted.get(address) is not ep:
                task.cancel()
                del self._tasks[address]
        self._props_asked.intersection_update(wanted.values())
        if balancer is None or self.adapter.metrics_path is None:
            return
        if len(self._tasks) == len(wanted):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is None and serving:
            self._loop = loop
        if loop is not self._loop:
            return
        for address, ep in wanted.items():
            if address not in self._tasks:
                task = loop.create_task(self._run(balancer, ep), name=f"scrape {address}")
                self._tasks[address] = (ep, task)

    def idle(self, balancer: Balancer) -> bool:
        """Whether some endpoint of ``balancer`` has no scraping task yet."""
        return self.adapter.metrics_path is not None and len(self._tasks) != len(balancer)

    async def close(self) -> None:
        tasks = [t for _, t in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, balancer: Balancer, ep: Endpoint) -> None:
        path = self.adapter.metrics_path
        url = f"{ep.root}{path}"
        while True:
            if time.monotonic() - balancer.last_pick > IDLE_AFTER:
                await asyncio.sleep(INTERVAL)
                continue
            pause = INTERVAL
            try:
                pause = await self._scrape(balancer, ep, url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a scrape never ends the task
                log.warning("scraping %s: %s", url, exc, exc_info=True)
                ep.scrape_error = type(exc).__name__
            await asyncio.sleep(pause)

    async def _scrape(self, balancer: Balancer, ep: Endpoint, url: str) -> float:
        """One scrape; returns how long to wait before the next."""
        try:
            session = self.adapter.session
            async with session.get(url, timeout=_TIMEOUT, allow_redirects=False) as resp:
                if resp.status >= 300:
                    self._unknown(ep, f"HTTP {resp.status} from its metrics")
                    return NO_METRICS_RETRY if resp.status in (404, 405) else INTERVAL
                raw = await _read_bounded(resp, MAX_METRICS_BYTES)
                if raw is None:
                    self._unknown(ep, "its metrics are larger than 1 MiB")
                    return NO_METRICS_RETRY
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            self._unknown(ep, "its metrics cannot be reached")
            ep.unreachable += 1
            if ep.available(time.monotonic()):
                balancer.failed(ep, "its metrics endpoint cannot be reached")
            if ep.unreachable == LOST_AFTER:
                given_up = balancer.abandon(ep)
                if given_up:
                    log.warning(
                        "endpoint %s takes no connections: %d calls waiting on it go elsewhere",
                        ep.address,
                        given_up,
                    )
            return INTERVAL
        except (aiohttp.ClientError, TimeoutError, UpstreamError) as exc:
            self._unknown(ep, f"reading its metrics failed ({type(exc).__name__})")
            return INTERVAL
        ep.unreachable = 0
        load = parse_load(raw)
        if load is None:
            self._unknown(ep, "its metrics are not vLLM's or llama.cpp's")
            return NO_METRICS_RETRY
        ep.running, ep.waiting, ep.kv_cache_usage = load.running, load.waiting, load.kv_cache_usage
        ep.scraped_at = time.time()
        ep.scrape_error = None
        balancer.server = load.kind
        if load.kind == "llamacpp" and ep not in self._props_asked:
            self._props_asked.add(ep)
            await self._read_slots(ep)
        return INTERVAL

    async def _read_slots(self, ep: Endpoint) -> None:
        """llama.cpp's slot count, from its ``/props``; left unknown (the server then
        chooses its slots) when that cannot be read."""
        try:
            async with self.adapter.session.get(
                f"{ep.root}/props", timeout=_TIMEOUT, allow_redirects=False
            ) as resp:
                raw = await _read_bounded(resp, MAX_PROPS_BYTES) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, UpstreamError):
            return
        try:
            total = orjson.loads(raw).get("total_slots") if raw is not None else None
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(total, int) and not isinstance(total, bool) and total > 0:
            ep.slots = SlotTable(total)

    @staticmethod
    def _unknown(ep: Endpoint, why: str) -> None:
        ep.running = ep.waiting = ep.kv_cache_usage = None
        ep.scrape_error = why


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes."""
    raw = bytearray()
    while chunk := await resp.content.readany():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)
