"""State every replica of the router shares, on Redis: rate budgets and breaker news.

Rate budgets are GCRA cells in Redis, and spending budgets hold what the database
cannot show yet (requests in flight, costs not committed): both are kept by Lua scripts
(``redis_scripts``) that run atomically on the server with the server's clock, so
several replicas (and several worker processes) together send a provider no more than
its limit and spend no more than a budget. The scripts of one event-loop turn go to
Redis as one pipeline.

Breaker news travels by pub/sub: a replica whose breaker opens (or whose Retry-After
arrives) publishes it, and the others hold the provider back too, within a round trip.
So do placements: where a replica sent a conversation among a provider's endpoints
(``core.balance``), so that its next turn goes there through any replica.
Each message is signed with a key derived from the Redis URL (its credentials
included) and dated: a client that may publish on the Redis but is not a router of this
deployment (another user of a shared Redis) cannot name a provider, and an old message
replayed is ignored. Whatever arrives is checked before it is believed; anything else
is counted (``switchyard_shared_state_news_refused``) and dropped, and the listener
goes on.

When Redis cannot be reached the router serves on: ``take`` answers None (the caller
falls back to its own budgets), ``publish`` drops the news, a gauge and a log line say
so, and a background task reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from switchyard.router.metrics import Metrics
from switchyard.router.storage import redis_scripts as scripts
from switchyard.router.storage.cells import Cell

log = logging.getLogger("switchyard.router")

CHANNEL = "switchyard:breakers"
#: News older than this (a replay) is not believed.
NEWS_MAX_AGE = 30.0
#: The most a message may hold; news is a few dozen bytes.
NEWS_MAX_BYTES = 1024
_PROVIDER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
#: An endpoint's ``host:port`` (``[v6]:port`` too), as the routing table lists them.
_ADDRESS = re.compile(r"^[-A-Za-z0-9.:\[\]]{1,260}$")

_SCRIPTS = {
    "beat": scripts.BEAT,
    "take": scripts.TAKE,
    "give": scripts.GIVE,
    "hold": scripts.HOLD,
    "settle": scripts.SETTLE,
    "commit": scripts.COMMIT,
}


@dataclass(slots=True)
class _Call:
    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    reply: asyncio.Future[Any | None] | None  # None: nobody waits


class SharedState:
    def __init__(
        self,
        url: str,
        metrics: Metrics,
        on_news: Callable[[dict[str, Any]], None],
        *,
        timeout: float = 0.25,
        prefix: str = "switchyard",
        on_processes: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.on_news = on_news
        self.on_processes = on_processes
        self.prefix = prefix
        #: Router processes sharing this state, as last counted (0: not yet).
        self.processes = 0
        self._processes_key = f"{prefix}:processes"
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
        #: Signs and checks breaker news: only who knows the URL's credentials can speak.
        self._news_key = hashlib.sha256(b"switchyard breaker news\0" + url.encode()).digest()
        self._news_refused_logged = float("-inf")
        self._shas: dict[str, str] = {}
        self._queue: list[_Call] = []
        #: Tokens to give back, by cell: [interval (µs), amount], sent with the next flush.
        self._gives: dict[str, list[Any]] = {}
        self._flushing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._down_since: float | None = None
        self._refused_logged = float("-inf")
        self._lost_logged = float("-inf")
        self._said_lost = False

    def key(self, name: str) -> str:
        return f"{self.prefix}:limit:{name}"

    # -- life ---------------------------------------------------------------------
    async def start(self) -> None:
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="shared-state-news"),
            loop.create_task(self._beat(), name="shared-state-beat"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.connected:  # the others count one process less at once
            with contextlib.suppress(RedisError, OSError):
                await self._redis.zrem(self._processes_key, self.origin)
        await self._redis.aclose()
        await self._news.aclose()

    async def _connect(self) -> bool:
        try:
            for name, source in _SCRIPTS.items():
                self._shas[name] = await self._redis.script_load(source)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return False
        self._joined()
        return True

    def _joined(self) -> None:
        if not self.connected:
            self.connected = True
            self.metrics.shared_state_up.set(1)
            if self._down_since is not None and self._said_lost:
                self._said_lost = False
                log.warning(
                    "shared state at %s is back after %.1f s: limits and breakers are shared again",
                    self._safe_url(),
                    time.monotonic() - self._down_since,
                )
            self._down_since = None

    def _lost(self, exc: BaseException) -> None:
        now = time.monotonic()
        # Said once a minute at most: a Redis that keeps refusing (full) keeps coming back.
        if (self.connected or self._down_since is None) and now - self._lost_logged > 60:
            self._lost_logged = now
            self._said_lost = True
            reason = f"{exc}" if isinstance(exc, ResponseError) else type(exc).__name__
            log.warning(
                "shared state at %s is unreachable (%s): serving on this process's own "
                "breakers and its share (1/%d) of every rate limit until it is back",
                self._safe_url(),
                reason,
                max(self.processes, 1),
            )
        if self.connected or self._down_since is None:
            self._down_since = now
        self.connected = False
        self.metrics.shared_state_up.set(0)

    def _safe_url(self) -> str:
        return self.url.split("@")[-1]

    # -- scripts, pipelined ----------------------------------------------------------
    def run(
        self, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any | None]:
        """Run one of the scripts in the next pipeline: its reply, or None when Redis
        cannot answer (the caller serves on its own state)."""
        fut: asyncio.Future[Any | None] = asyncio.get_running_loop().create_future()
        if not self.connected:
            fut.set_result(None)
            return fut
        self._queue.append(_Call(script, keys, args, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return fut

    def send(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Run a script whose reply nobody waits for, in the next pipeline; best effort."""
        if self.connected:
            self._queue.append(_Call(script, keys, args, None))
            if not self._flushing:
                self._flushing = True
                asyncio.get_running_loop().call_soon(self._flush_soon)

    async def time_us(self) -> int | None:
        """Redis's clock, which every replica's scripts read: None when unreachable."""
        if not self.connected:
            return None
        try:
            seconds, micros = await self._redis.time()
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return None
        return int(seconds) * 1_000_000 + int(micros)

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        task.add_done_callback(_quiet)

    async def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._flushing = False
        gives, self._gives = self._gives, {}
        batch += [_Call("give", [key], owed, None) for key, owed in gives.items()]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for call in batch:
                pipe.evalsha(self._shas[call.script], len(call.keys), *call.keys, *call.args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                self._lost(exc)
                results = [exc] * len(batch)
            reload = False
            for call, result in zip(batch, results, strict=True):
                if isinstance(result, NoScriptError):
                    reload = True  # Redis restarted and forgot the scripts
                elif isinstance(result, ResponseError):
                    self._refused(call.script, result)
                if call.reply is not None and not call.reply.done():
                    call.reply.set_result(None if isinstance(result, BaseException) else result)
            if reload:
                await self._connect()
        finally:
            for call in batch:  # whatever happened, nobody waits for ever
                if call.reply is not None and not call.reply.done():
                    call.reply.set_result(None)

    def _refused(self, script: str, error: ResponseError) -> None:
        """A script Redis would not run. A full Redis (OOM, with noeviction) or a replica
        (READONLY) cannot keep the state: serve on our own, as if it were away."""
        message = str(error)
        if message.startswith(("OOM", "READONLY")):
            self._lost(error)
            return
        now = time.monotonic()
        if now - self._refused_logged > 60:
            self._refused_logged = now
            log.warning("shared state refused script %s: %s", script, message)

    # -- rate budgets ---------------------------------------------------------------
    async def take(self, cells: Sequence[Cell], amounts: Sequence[float]) -> float | None:
        """Take ``amounts`` from ``cells`` together: 0.0 when taken, the seconds until
        they would be there when not, None when Redis cannot say (use your own)."""
        args: list[Any] = []
        for cell, amount in zip(cells, amounts, strict=True):
            args += cell.args(amount)
        reply = await self.run("take", [c.key for c in cells], args)
        if reply is None:
            return None
        taken, wait_us = reply
        return 0.0 if int(taken) else int(wait_us) / 1_000_000

    def give(self, cell: Cell, amount: float) -> None:
        """Give back what a call did not use; best effort. Nobody waits for it: the gives
        of the next 50 ms go together, one script per cell."""
        if amount <= 0 or not self.connected:
            return
        owed = self._gives.get(cell.key)
        if owed is None:
            self._gives[cell.key] = [60_000_000 // cell.per_minute, amount]
            if len(self._gives) == 1 and not self._flushing:
                asyncio.get_running_loop().call_later(0.05, self._flush_gives)
        else:
            owed[1] += amount

    def _flush_gives(self) -> None:
        if self._gives and not self._flushing:
            self._flushing = True
            self._flush_soon()

    # -- processes --------------------------------------------------------------------
    async def _beat(self) -> None:
        """Say every second that this process is alive, and learn how many are: while
        Redis is away, each keeps its share of every limit (``on_processes``)."""
        while True:
            count = await self.run("beat", [self._processes_key], [self.origin, 5_000_000])
            if count is not None and int(count) != self.processes:
                self.processes = int(count)
                self.metrics.shared_state_processes.set(self.processes)
                if self.on_processes is not None:
                    try:
                        self.on_processes(self.processes)
                    except Exception:
                        log.exception("applying the count of router processes failed")
            await asyncio.sleep(1.0)

    # -- breaker news ---------------------------------------------------------------
    def publish(self, news: dict[str, Any]) -> None:
        if not self.connected:
            return
        data = self._sign(orjson.dumps(news | {"origin": self.origin, "at": time.time()}))
        task = asyncio.get_running_loop().create_task(self._publish(data))
        task.add_done_callback(_quiet)

    def _sign(self, payload: bytes) -> bytes:
        return (
            hmac.new(self._news_key, payload, hashlib.sha256).hexdigest().encode() + b" " + payload
        )

    def _read(self, data: Any) -> dict[str, Any] | None:
        """The news a message holds, once its signature, date and shape check out;
        None (counted, and logged now and then) otherwise."""
        reason = None
        news: Any = None
        if not isinstance(data, bytes) or len(data) > NEWS_MAX_BYTES:
            reason = "malformed"
        else:
            signature, _, payload = data.partition(b" ")
            expected = hmac.new(self._news_key, payload, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(signature, expected):
                reason = "unsigned"
            else:
                try:
                    news = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    reason = "malformed"
        if reason is None:
            reason = _checked(news)
        if reason is None:
            return dict(news)
        self.metrics.shared_state_news_refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._news_refused_logged > 60:
            self._news_refused_logged = now
            log.warning("news on %s refused (%s): ignored", CHANNEL, reason)
        return None

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
                    news = self._read(message.get("data"))
                    if news is None or news["origin"] == self.origin:
                        continue
                    try:
                        self.on_news(news)
                    except Exception:
                        log.exception("applying news from another replica failed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError) as exc:
                self._lost(exc)
            finally:
                with contextlib.suppress(BaseException):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _checked(news: Any) -> str | None:
    """Why ``news`` is not news a replica sends; None when it is."""
    if not isinstance(news, dict):
        return "malformed"
    if not isinstance(news.get("origin"), str) or not isinstance(news.get("at"), int | float):
        return "malformed"
    if not (isinstance(news.get("provider"), str) and _PROVIDER.match(news["provider"])):
        return "malformed"
    for flag in ("open", "closed"):
        if not isinstance(news.get(flag, False), bool):
            return "malformed"
    resume_in = news.get("resume_in")
    if resume_in is not None and not (
        isinstance(resume_in, int | float) and 0 <= resume_in <= 3600
    ):
        return "malformed"
    placed = news.get("placed")
    if placed is not None and not (
        isinstance(placed, dict)
        and isinstance(placed.get("key"), int)
        and 0 <= placed["key"] < 2**64
        and isinstance(placed.get("address"), str)
        and _ADDRESS.match(placed["address"])
        and (placed.get("slot") is None or _small_int(placed["slot"]))
    ):
        return "malformed"
    if abs(time.time() - news["at"]) > NEWS_MAX_AGE:
        return "stale"
    return None


def _small_int(value: Any) -> bool:
    """A llama.cpp slot's number (the balancer ignores one its server lacks)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 65536


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
