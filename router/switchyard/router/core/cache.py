"""The response cache: exact match on the canonical request, memory LRU over the store.

The key is the SHA-256 of the request's canonical JSON (messages, model or
task type, parameters) and the organization, so one organization never sees
another's answers. By default only deterministic requests (temperature 0) are
cached; the table's cache settings and ``Cache-Control`` change that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from switchyard.router.contract import CacheSettings
from switchyard.router.core.chat import ChatRequest, ChatResult, ToolCall, Usage
from switchyard.router.storage.base import CacheEntry, Store
from switchyard.router.storage.records import utcnow

log = logging.getLogger("switchyard.router.cache")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What this request may do with the cache."""

    read: bool
    write: bool


_NONE = CachePolicy(read=False, write=False)
_WRITE = CachePolicy(read=False, write=True)
_BOTH = CachePolicy(read=True, write=True)


def policy(settings: CacheSettings, req: ChatRequest, cache_control: str | None) -> CachePolicy:
    if not settings.enabled:
        return _NONE
    task = req.task_type
    if task is not None and task in settings.never_cache_tasks:
        return _NONE
    deterministic = req.temperature == 0
    cacheable = deterministic or (task is not None and task in settings.always_cache_tasks)
    if not cacheable:
        return _NONE
    if not cache_control:
        return _BOTH
    directives = {d.strip().lower() for d in cache_control.split(",")}
    if "no-store" in directives:
        return _NONE
    return _WRITE if "no-cache" in directives else _BOTH


def cache_key(organization: str, req: ChatRequest) -> str:
    canonical = {
        "organization": organization,
        "model": req.model,
        "task": None if req.model else req.task_type,
        "system": req.system,
        "messages": [
            [
                m.role,
                m.content,
                [[c.id, c.name, c.arguments] for c in m.tool_calls],
                m.tool_call_id,
                [[i.media_type, i.data, i.url] for i in m.images],
            ]
            for m in req.messages
        ],
        # What a provider of the client's protocol gets as sent (cache_control, ...).
        "raw": [req.raw_messages, req.raw_system],
        "tools": [[t.name, t.description, t.parameters] for t in req.tools],
        "tool_choice": req.tool_choice,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": req.stop,
        # response_format, seed, ...: they change the answer. Dropped ones do not
        # reach any provider, but a request that names them is kept apart all the same.
        "params": req.params,
        "betas": req.betas,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class Cached:
    """A cached answer as the surfaces need it."""

    result: ChatResult
    model: str
    provider: str
    cost: Decimal  # what it cost when it was made: the saving of each hit
    expires_at: datetime


def _serialize(result: ChatResult, model: str, provider: str) -> dict[str, Any]:
    return {
        "content": result.content,
        "finish_reason": result.finish_reason,
        "usage": [result.usage.prompt_tokens, result.usage.completion_tokens],
        "tool_calls": [[c.id, c.name, c.arguments] for c in result.tool_calls],
        "upstream_model": result.upstream_model,
        "logprobs": result.logprobs,
        "model": model,
        "provider": provider,
    }


def _deserialize(entry: CacheEntry) -> Cached:
    r = entry.response
    result = ChatResult(
        content=r["content"],
        finish_reason=r["finish_reason"],
        usage=Usage(*r["usage"]),
        upstream_model=r["upstream_model"],
        tool_calls=[ToolCall(*c) for c in r["tool_calls"]],
        logprobs=r.get("logprobs"),
    )
    return Cached(result, r["model"], r["provider"], entry.cost, entry.expires_at)


class ResponseCache:
    def __init__(self, store: Store, settings: CacheSettings, lookup_timeout: float = 0.1):
        self.store = store
        self.settings = settings
        self.lookup_timeout = lookup_timeout
        self._lru: OrderedDict[str, Cached] = OrderedDict()
        self._hits: dict[str, tuple[int, datetime]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._store_down_until = 0.0

    def configure(self, settings: CacheSettings) -> None:
        self.settings = settings
        while len(self._lru) > settings.memory_entries:
            self._lru.popitem(last=False)

    async def get(self, key: str) -> Cached | None:
        now = utcnow()
        hit = self._lru.get(key)
        if hit is not None:
            if hit.expires_at > now:
                self._lru.move_to_end(key)
                self._count(key, now)
                return hit
            del self._lru[key]
        loop = asyncio.get_running_loop()
        if loop.time() < self._store_down_until:
            return None
        try:
            # A shared cache is worth a quick look; a slow database is a miss.
            entry = await asyncio.wait_for(self.store.cache_get(key, now), self.lookup_timeout)
        except TimeoutError:
            return None
        except Exception:  # unavailable: serve from the provider, and for a few
            # seconds do not ask again, so an outage costs each request nothing.
            self._store_down_until = loop.time() + 5.0
            return None
        if entry is None:
            return None
        cached = _deserialize(entry)
        self._remember(key, cached)
        self._count(key, now)
        return cached

    def put(
        self,
        key: str,
        organization: str,
        result: ChatResult,
        model: str,
        provider: str,
        cost: Decimal,
    ) -> None:
        now = utcnow()
        expires = now + timedelta(seconds=self.settings.ttl_seconds)
        payload = _serialize(result, model, provider)
        self._remember(key, Cached(result, model, provider, cost, expires))
        entry = CacheEntry(key, organization, payload, cost, now, expires)
        self._spawn(self.store.cache_put(entry))

    def _remember(self, key: str, cached: Cached) -> None:
        self._lru[key] = cached
        self._lru.move_to_end(key)
        while len(self._lru) > self.settings.memory_entries:
            self._lru.popitem(last=False)

    def _count(self, key: str, now: datetime) -> None:
        n, _ = self._hits.get(key, (0, now))
        self._hits[key] = (n + 1, now)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:
            log.warning("cache write failed: %s", exc)

    # -- background upkeep: hit counts and purging ----------------------------
    def start(self, interval: float = 5.0, purge_every: float = 600.0) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._upkeep(interval, purge_every))

    async def flush_hits(self) -> None:
        hits, self._hits = self._hits, {}
        if hits:
            try:
                await self.store.cache_hits(hits)
            except Exception as exc:
                log.warning("recording %d cache hit counts failed: %s", len(hits), exc)

    async def _upkeep(self, interval: float, purge_every: float) -> None:
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            await self.flush_hits()
            if loop.time() - last_purge >= purge_every:
                last_purge = loop.time()
                try:
                    purged = await self.store.cache_purge(utcnow())
                    if purged:
                        log.info("purged %d expired cache entries", purged)
                except Exception as exc:
                    log.warning("purging the cache failed: %s", exc)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush_hits()
