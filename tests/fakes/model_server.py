"""A fake vLLM replica that behaves like a model server under load: a few engine slots, a
queue in front of them, and a prefix cache, so that how calls are spread shows.

- **Slots**: at most ``slots`` requests run at once; the rest wait in arrival order, as
  ``vllm:num_requests_waiting`` says.
- **Prefix cache**: a prompt is its messages; each message prefix's token count is kept
  (least recently used first out, up to ``cache_tokens``). A request computes only the
  tokens after the longest prefix in the cache, at ``prefill_per_token`` seconds each,
  before its first token; then ``decode_per_token`` per output token.
- ``/metrics`` in vLLM's exposition: ``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` and the prefix-cache
  counters ``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` (in
  tokens), as vLLM's V1 engine publishes them.

Tokens are counted as a quarter of the characters, like the router's estimate.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Any

from aiohttp import web

from .faults import Fault
from .server import Dropped, StreamScript
from .vllm import FakeVLLM


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeModelServer(FakeVLLM):
    def __init__(
        self,
        *,
        slots: int = 2,
        prefill_per_token: float = 0.0002,
        decode_per_token: float = 0.002,
        cache_tokens: int = 20_000,
        reply: str | None = "ok",
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=None, reply=reply, **kwargs)
        self.slots = slots
        self.prefill_per_token = prefill_per_token
        self.decode_per_token = decode_per_token
        self.cache_tokens = cache_tokens
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0  # every prompt token asked for
        self.cached_tokens = 0  # of those, found in the prefix cache
        self.served = 0
        self.streaming = 0  # streams whose answer is being sent now
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._cached_total = 0
        self._slots: asyncio.Semaphore | None = None

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/metrics", self.metrics)

    def _prefixes(self, body: dict[str, Any]) -> list[tuple[bytes, int]]:
        """Each message prefix's hash and token count, shortest first."""
        out: list[tuple[bytes, int]] = []
        h = hashlib.blake2b(str(body.get("model")).encode(), digest_size=16)
        total = 0
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            text = content if isinstance(content, str) else str(content)
            h.update(f"\x00{m.get('role')}\x00{text}".encode())
            total += _tokens(text)
            out.append((h.copy().digest(), total))
        return out

    def _prefill(self, body: dict[str, Any]) -> int:
        """Tokens computed for this prompt; the cache then holds all its prefixes."""
        prefixes = self._prefixes(body)
        if not prefixes:
            return 0
        cached = 0
        for digest, tokens in prefixes:
            if digest not in self._cache:
                break  # a prefix is cached only after its parent
            self._cache.move_to_end(digest)
            cached = tokens
        total = prefixes[-1][1]
        self.prompt_tokens += total
        self.cached_tokens += cached
        previous = 0
        for digest, tokens in prefixes:
            # Each prefix holds only its last message's tokens: the rest are its parent's.
            if digest not in self._cache:
                self._cache[digest] = tokens - previous
                self._cached_total += tokens - previous
            previous = tokens
        while self._cached_total > self.cache_tokens and self._cache:
            _, tokens = self._cache.popitem(last=False)
            self._cached_total -= tokens
        return total - cached

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.slots)
        body = self.body(request)
        if not isinstance(body, dict):
            return await super().chat(request)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            computed = self._prefill(body)
            await asyncio.sleep(computed * self.prefill_per_token)
            out = body.get("max_tokens") or 8
            await asyncio.sleep(min(int(out), 16) * self.decode_per_token)
            self.served += 1
            return await super().chat(request)
        finally:
            self.running -= 1
            self._slots.release()

    async def send_stream(
        self, request: web.Request, script: StreamScript, fault: Fault | None
    ) -> web.StreamResponse:
        self.streaming += 1
        try:
            return await super().send_stream(request, script, fault)
        except ConnectionResetError:
            raise Dropped from None  # killed (``kill``) while sending: nothing to answer
        finally:
            self.streaming -= 1

    def kill(self) -> None:
        """Go as a process killed mid-answer goes: every open connection cut at once,
        streams under way included, then nothing listening."""
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and runner.server is not None:
            server = runner.server

            async def cut() -> None:
                for handler in list(server.connections):
                    if handler.transport is not None:
                        handler.transport.abort()

            asyncio.run_coroutine_threadsafe(cut(), loop).result(5)
        self.stop()

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        model = self.models[0]
        usage = self._cached_total / self.cache_tokens if self.cache_tokens else 0.0
        labels = f'{{engine="0",model_name="{model}"}}'
        text = "\n".join(
            [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{labels} {float(self.running)}",
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{labels} {float(self.waiting)}",
                "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
                "# TYPE vllm:kv_cache_usage_perc gauge",
                f"vllm:kv_cache_usage_perc{labels} {min(usage, 1.0)}",
                "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of "
                "number of queried tokens.",
                "# TYPE vllm:prefix_cache_queries_total counter",
                f"vllm:prefix_cache_queries_total{labels} {float(self.prompt_tokens)}",
                "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of "
                "cached tokens.",
                "# TYPE vllm:prefix_cache_hits_total counter",
                f"vllm:prefix_cache_hits_total{labels} {float(self.cached_tokens)}",
                "",
            ]
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")
