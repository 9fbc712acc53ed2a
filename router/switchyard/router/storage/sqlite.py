"""An embedded SQLite file: the default when no database URL is given.

sqlite3 blocks, so every call runs on one dedicated thread that owns the
connection; the event loop only awaits it. Usage records, the one steady stream of
writes, go to a writer process with a connection of its own: their SQL and rollups
then never hold the serving process's interpreter lock, which at 32 concurrent
requests showed in the tail latency. That process (``sqlite_usage``, started by
``sqlite_writer``) comes with the first batch of records, so a router that records
none (``--no-usage``) runs as one process. Money is stored as integer nano-dollars so
that SQL sums stay exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from switchyard.router.storage import histogram
from switchyard.router.storage.base import (
    CacheEntry,
    RecentKind,
    Spend,
    Store,
    StoredTurn,
    StoreRefused,
    StoreUnavailable,
    Turn,
    TurnHead,
    TurnKind,
    recent_limit,
    recent_sql,
)
from switchyard.router.storage.migrations import MIGRATIONS
from switchyard.router.storage.records import UsageRecord, record_from_row, to_rows
from switchyard.router.storage.rollup import HEDGES_SQL, NO_LATENCY, Rollup, summed
from switchyard.router.storage.sqlite_usage import (
    COLUMN_LIST,
    error_kind,
    open_database,
    stage,
    unpack_hist,
    write_rows,
)
from switchyard.router.storage.sqlite_writer import WriterProcess, store_error

log = logging.getLogger("switchyard.router.storage")

T = TypeVar("T")
NANO = Decimal(10) ** 9


#: A record's latency bucket (``histogram.bucket``) in SQL; -1 for none.
_BUCKET_SQL = (
    "CASE WHEN latency_ms IS NULL THEN -1 WHEN latency_ms <= ? THEN 0 ELSE "
    "min(255, CAST((ln(latency_ms) - ln(?)) / ? AS INTEGER)) END"
)


def nano(d: Decimal) -> int:
    return int(d * NANO)


def usd(n: int | None) -> Decimal:
    return (Decimal(n or 0) / NANO).normalize() if n else Decimal(0)


def ts(d: datetime) -> float:
    return d.timestamp()


def mapped(exc: sqlite3.Error) -> StoreUnavailable | StoreRefused:
    """sqlite3's errors as the store's."""
    return store_error(error_kind(exc), str(exc))


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self, path: str | Path, writer_process: bool = True) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        #: Usage records are written by a process of their own, so that the serving
        #: process's interpreter lock is not held by their SQL and rollups.
        self.writer_process = writer_process
        self._writer: WriterProcess | None = None
        self._starting = asyncio.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise StoreUnavailable("the SQLite store is not open")
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise mapped(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = open_database(str(self.path))
            conn.execute("BEGIN IMMEDIATE")  # one migrator at a time
            conn.execute(
                "CREATE TABLE IF NOT EXISTS switchyard_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM switchyard_migrations")}
            for m in MIGRATIONS:
                if m.version not in done:
                    # executescript() would commit the open transaction; run statements.
                    for statement in m.sqlite.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO switchyard_migrations VALUES (?, ?, ?)",
                        (m.version, m.name, datetime.now(UTC).timestamp()),
                    )
            conn.execute("COMMIT")
            # The staging table lives with the connection, outside any migration.
            stage(conn)
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def _started_writer(self) -> WriterProcess:
        """The writer process, started by the first batch that needs it (or the first
        after one died). Batches come from the recorder's background task, so the
        start delays no request."""
        async with self._starting:
            if self._writer is None or not self._writer.alive:
                self._writer = await WriterProcess.start(str(self.path))
            return self._writer

    async def _write(self, rows: Sequence[tuple[object, ...]]) -> int:
        if not self.writer_process:
            return await self._run(lambda conn: write_rows(conn, rows))
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        writer = await self._started_writer()
        try:
            return await writer.write(rows)
        finally:
            if not writer.alive:
                # It died (killed, out of memory): the batch is kept by the caller (the
                # spool), and the next one starts another writer.
                log.warning("the SQLite usage writer process died; the next batch starts another")

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    async def write_usage(self, records: Sequence[UsageRecord]) -> int:
        # Rows are bound in C by executemany into a staging table; SQL then keeps
        # only the new ones and sums them, so the thread holds the GIL briefly.
        rows = await to_rows(records, lambda r: (
                r.id, r.organization, r.api_key, r.api, r.provider, r.model, r.task_type,
                r.prompt_tokens, r.completion_tokens, r.prompt_tokens + r.completion_tokens,
                nano(r.input_cost), nano(r.output_cost), nano(r.input_cost + r.output_cost),
                nano(r.saved_cost), r.latency_ms, r.ttft_ms, r.status, r.http_status,
                r.error_class, int(r.cache_hit), int(r.stream), ts(r.requested_at),
                ts(r.completed_at), r.trace_id,
            ))  # fmt: skip

        return await self._write(rows)

    async def usage_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        def read(conn: sqlite3.Connection) -> list[Rollup]:
            return [
                Rollup(
                    r[0],
                    date.fromisoformat(r[1]),
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    usd(r[11]),
                    usd(r[12]),
                    unpack_hist(r[13]),
                    r[14],
                )
                for r in conn.execute(
                    "SELECT organization, day, provider, model, task_type, '', requests, "
                    "errors, cache_hits, prompt_tokens, completion_tokens, cost, saved_cost, "
                    "latency_hist, hedged FROM llm_usage_daily WHERE organization = ? "
                    "AND day >= ? AND day < ?",
                    (organization, first.isoformat(), last.isoformat()),
                )
            ]

        return await self._run(read)

    async def usage_key_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        def read(conn: sqlite3.Connection) -> list[Rollup]:
            return [
                Rollup(
                    organization,
                    date.fromisoformat(r[0]),
                    "",
                    "",
                    "",
                    r[1],
                    r[2],
                    r[3],
                    r[5],
                    r[6],
                    r[7],
                    usd(r[8]),
                    usd(r[9]),
                    NO_LATENCY,
                    r[4],
                )
                for r in conn.execute(
                    "SELECT day, api_key, requests, errors, hedged, cache_hits, prompt_tokens, "
                    "completion_tokens, cost, saved_cost FROM llm_usage_daily_keys "
                    "WHERE organization = ? AND day >= ? AND day < ?",
                    (organization, first.isoformat(), last.isoformat()),
                )
            ]

        return await self._run(read)

    async def usage_records(
        self, organization: str, start: datetime, end: datetime
    ) -> list[UsageRecord]:
        def read(conn: sqlite3.Connection) -> list[UsageRecord]:
            return [
                record_from_row(r, usd, lambda t: datetime.fromtimestamp(t, UTC))
                for r in conn.execute(
                    f"SELECT {COLUMN_LIST} FROM llm_requests WHERE organization = ? "
                    "AND requested_at >= ? AND requested_at < ?",
                    (organization, ts(start), ts(end)),
                )
            ]

        return await self._run(read)

    async def recent_requests(
        self, organization: str, since: datetime, kind: RecentKind, limit: int
    ) -> list[UsageRecord]:
        def read(conn: sqlite3.Connection) -> list[UsageRecord]:
            return [
                record_from_row(r, usd, lambda t: datetime.fromtimestamp(t, UTC))
                for r in conn.execute(
                    recent_sql(kind, "?"),
                    (organization, ts(since), recent_limit(limit)),
                )
            ]

        return await self._run(read)

    async def usage_partial(
        self, organization: str, start: datetime, end: datetime
    ) -> list[Rollup]:
        def read(conn: sqlite3.Connection) -> list[Rollup]:
            out: dict[tuple[str, str, str, str, str], Rollup] = {}
            for row in conn.execute(
                "SELECT date(requested_at, 'unixepoch'), coalesce(provider, ''), "
                "coalesce(model, ''), coalesce(task_type, ''), api_key, " + _BUCKET_SQL + ", "
                f"sum(status NOT IN {HEDGES_SQL}), sum(status = 'error'), sum(cache_hit), "
                "sum(prompt_tokens), sum(completion_tokens), sum(total_cost), sum(saved_cost), "
                f"sum(status IN {HEDGES_SQL}) FROM llm_requests "
                "WHERE organization = ? AND requested_at >= ? AND requested_at < ? "
                "GROUP BY 1, 2, 3, 4, 5, 6",
                (
                    histogram.LOW_MS,
                    histogram.LOW_MS,
                    histogram.STEP,
                    organization,
                    ts(start),
                    ts(end),
                ),
            ):
                day, provider, model, task, key, b = row[:6]
                roll = out.get((day, provider, model, task, key))
                if roll is None:
                    roll = out[(day, provider, model, task, key)] = Rollup(
                        organization, date.fromisoformat(day), provider, model, task, key
                    )
                roll.merge(summed(row[6:], b, usd))
            return list(out.values())

        return await self._run(read)

    async def usage_purge(self, before: datetime, batch: int = 5000) -> int:
        orgs = await self._run(
            lambda conn: [
                r[0] for r in conn.execute("SELECT DISTINCT organization FROM llm_usage_daily")
            ]
        )
        purged = 0
        for org in orgs:
            while True:

                def delete(conn: sqlite3.Connection, org: str = org) -> int:
                    return conn.execute(
                        "DELETE FROM llm_requests WHERE id IN (SELECT id FROM llm_requests "
                        "WHERE organization = ? AND requested_at < ? LIMIT ?)",
                        (org, ts(before), batch),
                    ).rowcount

                n = await self._run(delete)
                purged += n
                if n < batch:
                    break
        return purged

    async def cache_get(self, key: str, now: datetime) -> CacheEntry | None:
        def get(conn: sqlite3.Connection) -> CacheEntry | None:
            row = conn.execute(
                "SELECT organization, response, cost, created_at, expires_at, hit_count "
                "FROM llm_response_cache WHERE cache_key = ? AND expires_at > ?",
                (key, ts(now)),
            ).fetchone()
            if row is None:
                return None
            return CacheEntry(
                key,
                row[0],
                json.loads(row[1]),
                usd(row[2]),
                datetime.fromtimestamp(row[3], UTC),
                datetime.fromtimestamp(row[4], UTC),
                int(row[5]),
            )

        return await self._run(get)

    async def cache_put(self, entry: CacheEntry) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO llm_response_cache (cache_key, organization, response, cost, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cache_key) "
                "DO UPDATE SET response = excluded.response, cost = excluded.cost, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at",
                (
                    entry.key,
                    entry.organization,
                    json.dumps(entry.response),
                    nano(entry.cost),
                    ts(entry.created_at),
                    ts(entry.expires_at),
                ),
            )

        await self._run(put)

    async def cache_hits(self, hits: dict[str, tuple[int, datetime]]) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE llm_response_cache SET hit_count = hit_count + ?, "
                "last_hit_at = max(coalesce(last_hit_at, 0), ?) WHERE cache_key = ?",
                [(n, ts(at), k) for k, (n, at) in sorted(hits.items())],
            )

        if hits:
            await self._run(update)

    async def cache_purge(self, now: datetime) -> int:
        return await self._run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM llm_response_cache WHERE expires_at <= ?", (ts(now),)
                ).rowcount
            )
        )

    async def turn_put(self, turn: Turn) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO llm_turns (id, organization, kind, previous_id, depth, answer, "
                "items, context, conversation_bytes, conversation_tokens, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn.id,
                    turn.organization,
                    turn.kind,
                    turn.previous_id,
                    turn.depth,
                    turn.answer,
                    turn.items,
                    turn.context,
                    turn.conversation_bytes,
                    turn.conversation_tokens,
                    ts(turn.created_at),
                    ts(turn.expires_at),
                ),
            )
        )

    async def turn_head(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> TurnHead | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT depth, conversation_bytes, conversation_tokens FROM llm_turns "
                "WHERE id = ? AND organization = ? AND kind = ? AND expires_at > ? "
                "AND answer IS NOT NULL",
                (id, organization, kind, ts(now)),
            ).fetchone()
        )
        if row is None:
            return None
        return TurnHead(id, kind, int(row[0]), int(row[1]), int(row[2]))

    async def turn_answer(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> bytes | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT answer FROM llm_turns WHERE id = ? AND organization = ? AND kind = ? "
                "AND expires_at > ? AND answer IS NOT NULL",
                (id, organization, kind, ts(now)),
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    async def turn_chain(self, organization: str, id: str) -> list[StoredTurn]:
        def read(conn: sqlite3.Connection) -> list[StoredTurn]:
            return [
                StoredTurn(r[0], int(r[1]), r[2], r[3], r[4])
                for r in conn.execute(
                    "WITH RECURSIVE chain AS ("
                    " SELECT id, previous_id, depth, answer, items, context FROM llm_turns"
                    " WHERE id = :id AND organization = :org"
                    " UNION ALL"
                    " SELECT t.id, t.previous_id, t.depth, t.answer, t.items, t.context"
                    " FROM llm_turns t JOIN chain c ON t.id = c.previous_id"
                    " WHERE t.organization = :org"
                    ") SELECT id, depth, answer, items, context FROM chain ORDER BY depth",
                    {"id": id, "org": organization},
                )
            ]

        return await self._run(read)

    async def turn_delete(self, organization: str, kind: TurnKind, id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = conn.execute(
                    "DELETE FROM llm_turns WHERE id = ? AND organization = ? AND kind = ? "
                    "AND answer IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM llm_turns c WHERE c.previous_id = llm_turns.id)",
                    (id, organization, kind),
                ).rowcount
                if not gone:
                    # Later turns point at it: its content goes, a marker stays until
                    # they do.
                    gone = conn.execute(
                        "UPDATE llm_turns SET answer = NULL, items = NULL, context = NULL, "
                        "expires_at = min(expires_at, ?) WHERE id = ? AND organization = ? "
                        "AND kind = ? AND answer IS NOT NULL",
                        (datetime.now(UTC).timestamp(), id, organization, kind),
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone > 0

        return await self._run(delete)

    async def turn_purge(self, now: datetime, batch: int = 5000) -> int:
        purged = 0
        while True:
            n = await self._run(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM llm_turns WHERE id IN (SELECT t.id FROM llm_turns t "
                        "WHERE t.expires_at <= ? AND NOT EXISTS "
                        "(SELECT 1 FROM llm_turns c WHERE c.previous_id = t.id) LIMIT ?)",
                        (ts(now), batch),
                    ).rowcount
                )
            )
            purged += n
            if n == 0:
                return purged

    async def spend(self, subjects: Sequence[tuple[str, str]], day: date, month: date) -> Spend:
        def read(conn: sqlite3.Connection) -> Spend:
            out = Spend()
            for scope, subject in subjects:
                for r in conn.execute(
                    "SELECT period, period_start, spent FROM llm_spend WHERE scope = ? AND "
                    "subject = ? AND ((period = 'day' AND period_start = ?) OR "
                    "(period = 'month' AND period_start = ?))",
                    (scope, subject, day.isoformat(), month.isoformat()),
                ):
                    out.totals[(scope, subject, r[0], date.fromisoformat(r[1]))] = usd(r[2])
            return out

        return await self._run(read)
