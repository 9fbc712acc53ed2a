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
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "switchyard_usage_spool_bytes",
            "Size of the local spool of unwritten usage records.",
            multiprocess_mode="livesum",
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
        self.rejected = Counter(
            "switchyard_usage_records_rejected",
            "Usage records the database refused (set aside in a file for a person to look at).",
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
        # Under load a batch fills long before the interval ends. The SQLite writer
        # commits 500 rows at a time anyway, and PostgreSQL takes a few transactions
        # a second at thousands of requests a second. What a round holds stays
        # small: 5,000 left the router's heap 2.5 MiB larger after a burst (pymalloc
        # arenas the batch had grown, pinned by the few objects that outlived it).
        batch_size: int = 500,
        flush_interval: float = 0.5,
        retry_interval: float = 1.0,
        write_timeout: float = 60.0,
        on_stored: Callable[[list[UsageRecord], float], None] | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.write_timeout = write_timeout
        self.on_stored = on_stored
        self._queue: deque[UsageRecord] = deque()
        self._overflow: list[UsageRecord] = []  # beyond the queue: spooled by the writer
        self._inflight: list[UsageRecord] = []  # taken from the queue, not yet kept
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store_down_until = 0.0
        self._closing = False
        self._spool_size = 0

    # -- the request path ---------------------------------------------------
    def submit(self, record: UsageRecord) -> None:
        """Accept a record. Never waits; never raises."""
        if len(self._queue) >= self.max_queue:
            self._overflow.append(record)
            self._wake.set()
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
            except BaseException:  # timed out, or the writer died: keep what it held
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        leftovers = self._inflight + self._overflow + self._drain(len(self._queue))
        self._inflight, self._overflow = [], []
        if leftovers:
            self._to_spool(leftovers)
        self._spool_size = self.spool.size()
        self._update_gauges()

    # -- the writer -----------------------------------------------------------
    def _drain(self, n: int) -> list[UsageRecord]:
        q = self._queue
        return [q.popleft() for _ in range(min(n, len(q)))]

    def _to_spool(self, records: list[UsageRecord], spool: Spool | None = None) -> None:
        """Synchronously: at exit, or from a thread."""
        try:
            (spool or self.spool).append(records)
            if spool is None:
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
        """Store a batch: True when it is kept (stored, or set aside as unstorable)."""
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.store.write_usage(batch), self.write_timeout)
        except (StoreUnavailable, TimeoutError) as exc:
            self.metrics.write_errors.inc()
            if time.monotonic() >= self._store_down_until:
                log.warning("usage store unavailable, spooling: %s", exc or "timed out")
            self._store_down_until = time.monotonic() + self.retry_interval
            return False
        except Exception as exc:
            # The store answered but refused: a record it cannot hold. Find it by
            # halving, so one bad record never holds back everyone else's.
            self.metrics.write_errors.inc()
            if len(batch) == 1:
                log.error(
                    "usage record %s cannot be stored (%s); set aside in %s",
                    batch[0].id,
                    exc,
                    self.spool.rejected.name,
                )
                await asyncio.to_thread(self._to_spool, batch, self.spool.rejected_spool())
                self.metrics.rejected.inc()
                return True
            half = len(batch) // 2
            first = await self._write(batch[:half])
            second = await self._write(batch[half:])
            return first and second
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.written.inc(len(batch))
        if self.on_stored is not None:
            self.on_stored(batch, time.monotonic())  # after the commit: see BudgetGuard
        return True

    async def _replay(self) -> None:
        path = await asyncio.to_thread(self.spool.take)
        if path is None:
            return
        batches = self.spool.read(path, self.batch_size)
        while True:
            # A batch at a time: a spool from a long outage may not fit in memory.
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            if not await self._write(batch):
                return  # keep the file; the next attempt starts it over (idempotently)
        await asyncio.to_thread(self.spool.done, path)
        log.info("replayed the usage spool")

    async def _run(self) -> None:
        while True:
            try:
                if await self._round():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die: records would pile up unseen
                log.exception("the usage writer failed a round; going on")
                await asyncio.sleep(self.retry_interval)

    async def _round(self) -> bool:
        """One gather-and-write round; True when closing and done."""
        loop = asyncio.get_running_loop()
        # Gather for up to one flush interval, or until a batch is full: a batch
        # costs a transaction whatever its size, so fewer and fuller is cheaper.
        deadline = loop.time() + self.flush_interval
        while len(self._queue) < self.batch_size and not self._closing and not self._overflow:
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
            self._wake.clear()
        if self._overflow:
            overflow, self._overflow = self._overflow, []
            self._inflight = overflow
            await self._spool_off_loop(overflow)
            self._inflight = []
        store_up = time.monotonic() >= self._store_down_until
        # Only what was gathered: records arriving during these writes wait for
        # the next round, or every write would carry just what one write let in.
        gathered = len(self._queue)
        while gathered > 0:
            batch = self._drain(min(gathered, self.batch_size))
            gathered -= len(batch)
            self._inflight = batch
            if not (store_up and await self._write(batch)):
                await self._spool_off_loop(batch)
                store_up = False
            self._inflight = []
        self._spool_size = await asyncio.to_thread(self.spool.size)
        if store_up and self._spool_size:
            await self._replay()
            self._spool_size = await asyncio.to_thread(self.spool.size)
        self._update_gauges()
        return self._closing and not self._queue
