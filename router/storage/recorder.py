"""Usage records off the request path: a bounded queue, a batch writer, a spool.

A request only appends to an in-memory deque. A background task writes
batches to the store; when the store is unreachable the batch goes to the
spool file and is replayed when the store returns. On shutdown the queue is
drained to the store, or to the spool. Nothing accepted is lost; a record that
cannot be kept even in the spool is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchyard.router.storage.base import Store, StoreUnavailable
from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.spool import Spool

log = logging.getLogger("switchyard.router.usage")


class RecorderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "switchyard_usage_queue_depth",
            "Usage records waiting to be written.",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "switchyard_usage_spool_bytes",
            "Size of the local spool of unwritten usage records.",
            registry=registry,
        )
        self.written = Counter(
            "switchyard_usage_records_written",
            "Usage records stored in the database.",
            registry=registry,
        )
        self.spooled = Counter(
            "switchyard_usage_records_spooled",
            "Usage records put in the local spool.",
            registry=registry,
        )
        self.lost = Counter(
            "switchyard_usage_records_lost",
            "Usage records that could be kept neither in the database nor in the spool.",
            registry=registry,
        )
        self.write_errors = Counter(
            "switchyard_usage_write_errors",
            "Failed batch writes to the database.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "switchyard_usage_batch_seconds",
            "Time to write one batch of usage records.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )


class UsageRecorder:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        metrics: RecorderMetrics,
        *,
        max_queue: int = 100_000,
        batch_size: int = 5000,
        flush_interval: float = 0.5,
        retry_interval: float = 1.0,
        on_stored: Callable[[list[UsageRecord], float], None] | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.on_stored = on_stored
        self._queue: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store_down_until = 0.0
        self._closing = False
        self._spool_size = 0

    # -- the request path ---------------------------------------------------
    def submit(self, record: UsageRecord) -> None:
        """Accept a record. Never waits; never raises."""
        if len(self._queue) >= self.max_queue:
            self._to_spool([record])
            return
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def close(self, grace: float = 15.0) -> None:
        """Write what is queued (to the store, or else the spool), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        if self._queue:
            self._to_spool(self._drain(len(self._queue)))
        self._spool_size = self.spool.size()
        self._update_gauges()

    # -- the writer -----------------------------------------------------------
    def _drain(self, n: int) -> list[UsageRecord]:
        q = self._queue
        return [q.popleft() for _ in range(min(n, len(q)))]

    def _to_spool(self, records: list[UsageRecord]) -> None:
        """Synchronously: for the few records that overflow the queue, and at exit."""
        try:
            self.spool.append(records)
            self.metrics.spooled.inc(len(records))
        except OSError as exc:
            log.error("cannot spool %d usage records: %s", len(records), exc)
            self.metrics.lost.inc(len(records))

    async def _spool_off_loop(self, records: list[UsageRecord]) -> None:
        # Serializing and fsyncing thousands of records must not stall requests.
        await asyncio.to_thread(self._to_spool, records)

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))
        self.metrics.spool_bytes.set(self._spool_size)

    async def _write(self, batch: list[UsageRecord]) -> bool:
        started = time.perf_counter()
        try:
            await self.store.write_usage(batch)
        except StoreUnavailable as exc:
            self.metrics.write_errors.inc()
            if time.monotonic() >= self._store_down_until:
                log.warning("usage store unavailable, spooling: %s", exc)
            self._store_down_until = time.monotonic() + self.retry_interval
            return False
        except Exception:
            # A bug or a constraint we did not expect: keep the records, say so loudly.
            self.metrics.write_errors.inc()
            log.exception("writing %d usage records failed; spooling them", len(batch))
            self._store_down_until = time.monotonic() + self.retry_interval
            return False
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.written.inc(len(batch))
        if self.on_stored is not None:
            self.on_stored(batch, started)
        return True

    async def _replay(self) -> None:
        path = await asyncio.to_thread(self.spool.take)
        if path is None:
            return
        batches = await asyncio.to_thread(lambda: list(self.spool.read(path, self.batch_size)))
        for batch in batches:
            if not await self._write(batch):
                return  # keep the file; the next attempt starts it over (idempotently)
        await asyncio.to_thread(self.spool.done, path)
        log.info("replayed the usage spool")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Gather for up to one flush interval, or until a batch is full: a batch
            # costs a transaction whatever its size, so fewer and fuller is cheaper.
            deadline = loop.time() + self.flush_interval
            while len(self._queue) < self.batch_size and not self._closing:
                left = deadline - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake.clear()
            store_up = time.monotonic() >= self._store_down_until
            # Only what was gathered: records arriving during these writes wait for
            # the next round, or every write would carry just what one write let in.
            gathered = len(self._queue)
            while gathered > 0:
                batch = self._drain(min(gathered, self.batch_size))
                gathered -= len(batch)
                if not (store_up and await self._write(batch)):
                    await self._spool_off_loop(batch)
                    store_up = False
            self._spool_size = await asyncio.to_thread(self.spool.size)
            if store_up and self._spool_size:
                await self._replay()
                self._spool_size = await asyncio.to_thread(self.spool.size)
            self._update_gauges()
            if self._closing and not self._queue:
                return
