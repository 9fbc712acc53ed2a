"""State every replica of the router shares, on Redis: rate budgets and breaker news.

Rate budgets are GCRA cells in Redis, taken and given back by Lua scripts that run
atomically on the server with the server's clock, so several replicas (and several
worker processes) together send a provider no more than its limit. The claims of one
event-loop turn go to Redis as one pipeline.

Breaker news travels by pub/sub: a replica whose breaker opens (or whose Retry-After
arrives) publishes it, and the others hold the provider back too, within a round trip.

When Redis cannot be reached the router serves on: ``take`` answers None (the caller
falls back to its own budgets), ``publish`` drops the news, a gauge and a log line say
so, and a background task reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from switchyard.router.metrics import Metrics

log = logging.getLogger("switchyard.router")

#: Take ``amount`` from every cell, or from none. ARGV, per key: the emission interval
#: and the tolerance (µs), and the amount. Returns {1, 0}, or {0, µs to wait}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i * 3 - 2])
  local tolerance = tonumber(ARGV[i * 3 - 1])
  local cost = interval * tonumber(ARGV[i * 3])
  if cost > tolerance then cost = tolerance end
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + cost
  if new - now > tolerance then
    return {0, new - tolerance - now}
  end
  next[i] = new
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', next[i]), 'PX',
             math.floor((next[i] - now) / 1000) + 1000)
end
return {1, 0}
"""

#: Give back ``amount`` of one cell (a reservation larger than what was used).
_GIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if new <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new), 'PX',
             math.floor((new - now) / 1000) + 1000)
end
return 1
"""

CHANNEL = "switchyard:breakers"


@dataclass(frozen=True, slots=True)
class Cell:
    """One budget: ``per_minute`` units a minute, all of them available at once."""

    key: str
    per_minute: int

    def args(self, amount: float) -> tuple[int, int, float]:
        interval = 60_000_000 // self.per_minute  # µs per unit
        return interval, interval * self.per_minute, amount


class SharedState:
    def __init__(
        self,
        url: str,
        metrics: Metrics,
        on_news: Callable[[dict[str, Any]], None],
        *,
        timeout: float = 0.25,
        prefix: str = "switchyard",
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.on_news = on_news
        self.prefix = prefix
        self.connected = False
        #: This process, so that its own news is not applied twice.
        self.origin = f"{time.time_ns():x}-{id(self):x}"
        # A pooled connection that died with a restarted server is retried once on a new
        # one; a server that does not answer is not waited for twice.
        self._redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            retry_on_error=[RedisConnectionError],
        )
        # Subscribed connections wait for news as long as it takes.
        self._news = aioredis.from_url(url, socket_connect_timeout=timeout)
        self._take_sha = ""
        self._give_sha = ""
        self._queue: list[tuple[Sequence[Cell], Sequence[float], asyncio.Future[float | None]]] = []
        self._flushing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._down_since: float | None = None

    def key(self, name: str) -> str:
        return f"{self.prefix}:limit:{name}"

    # -- life ---------------------------------------------------------------------
    async def start(self) -> None:
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name="shared-state-news")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._redis.aclose()
        await self._news.aclose()

    async def _connect(self) -> bool:
        try:
            self._take_sha = await self._redis.script_load(_TAKE)
            self._give_sha = await self._redis.script_load(_GIVE)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        self._joined()
        return True

    def _joined(self) -> None:
        if not self.connected:
            self.connected = True
            self.metrics.shared_state_up.set(1)
            if self._down_since is not None:
                log.warning(
                    "shared state at %s is back after %.1f s: limits and breakers are shared again",
                    self._safe_url(),
                    time.monotonic() - self._down_since,
                )
            self._down_since = None

    def _lost(self, exc: BaseException) -> None:
        if self.connected or self._down_since is None:
            log.warning(
                "shared state at %s is unreachable (%s): serving on this process's own "
                "limits and breakers until it is back",
                self._safe_url(),
                type(exc).__name__,
            )
            self._down_since = time.monotonic()
        self.connected = False
        self.metrics.shared_state_up.set(0)

    def _safe_url(self) -> str:
        return self.url.split("@")[-1]

    # -- budgets ------------------------------------------------------------------
    def take(self, cells: Sequence[Cell], amounts: Sequence[float]) -> asyncio.Future[float | None]:
        """Take ``amounts`` from ``cells`` together: 0.0 when taken, the seconds until
        they would be there when not, None when Redis cannot say (use your own)."""
        fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        if not self.connected:
            fut.set_result(None)
            return fut
        self._queue.append((cells, amounts, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return fut

    def give(self, cell: Cell, amount: float) -> None:
        """Give back what a call did not use; best effort."""
        if not self.connected or amount <= 0:
            return
        interval = 60_000_000 // cell.per_minute
        task = asyncio.get_running_loop().create_task(self._give(cell.key, interval, amount))
        task.add_done_callback(_quiet)

    async def _give(self, key: str, interval: int, amount: float) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.evalsha(self._give_sha, 1, key, interval, amount)

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        task.add_done_callback(_quiet)

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._flushing = False
        pipe = self._redis.pipeline(transaction=False)
        for cells, amounts, _ in batch:
            args: list[Any] = []
            for cell, amount in zip(cells, amounts, strict=True):
                args += cell.args(amount)
            pipe.evalsha(self._take_sha, len(cells), *[c.key for c in cells], *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            results = [exc] * len(batch)
        reload = False
        for (_, _, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, NoScriptError):
                reload = True  # Redis restarted and forgot the scripts
                fut.set_result(None)
            elif isinstance(result, BaseException):
                fut.set_result(None)
            else:
                taken, wait_us = result
                fut.set_result(0.0 if int(taken) else int(wait_us) / 1_000_000)
        if reload:
            await self._connect()

    # -- breaker news ---------------------------------------------------------------
    def publish(self, news: dict[str, Any]) -> None:
        if not self.connected:
            return
        data = orjson.dumps(news | {"origin": self.origin})
        task = asyncio.get_running_loop().create_task(self._publish(data))
        task.add_done_callback(_quiet)

    async def _publish(self, data: bytes) -> None:
        try:
            await self._redis.publish(CHANNEL, data)
        except (RedisError, OSError) as exc:
            self._lost(exc)

    async def _listen(self) -> None:
        """Apply the other replicas' news; reconnect while Redis is away."""
        delay = 0.2
        while True:
            pubsub = self._news.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if not self.connected:
                    await self._connect()
                delay = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        if not self.connected:
                            await self._connect()
                        continue
                    news = orjson.loads(message["data"])
                    if news.get("origin") != self.origin:
                        self.on_news(news)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError) as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(BaseException):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
