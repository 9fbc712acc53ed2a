"""An embedded SQLite file: the default when no database URL is given.

sqlite3 blocks, so every call runs on one dedicated thread that owns the one
connection; the event loop only awaits it. Money is stored as integer
nano-dollars so that SQL sums stay exact.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from switchyard.router.storage.base import (
    CacheEntry,
    GroupBy,
    Spend,
    Store,
    StoreUnavailable,
    UsageRow,
)
from switchyard.router.storage.migrations import MIGRATIONS
from switchyard.router.storage.periods import spend_keys
from switchyard.router.storage.records import UsageRecord

T = TypeVar("T")
NANO = Decimal(10) ** 9

_GROUP_SQL: dict[GroupBy, str] = {
    "day": "strftime('%Y-%m-%d', requested_at, 'unixepoch')",
    "week": "date(requested_at, 'unixepoch', 'weekday 0', '-6 days')",
    "month": "strftime('%Y-%m', requested_at, 'unixepoch')",
    "model": "coalesce(model, '(none)')",
    "task": "coalesce(task_type, '(none)')",
    "provider": "coalesce(provider, '(none)')",
}


def nano(d: Decimal) -> int:
    return int(d * NANO)


def usd(n: int | None) -> Decimal:
    return (Decimal(n or 0) / NANO).normalize() if n else Decimal(0)


def ts(d: datetime) -> float:
    return d.timestamp()


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise StoreUnavailable("the SQLite store is not open")
            try:
                return fn(self._conn)
            except sqlite3.OperationalError as exc:  # locked, disk full, I/O error
                raise StoreUnavailable(str(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
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
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    async def write_usage(self, records: Sequence[UsageRecord]) -> int:
        def write(conn: sqlite3.Connection) -> int:
            new = 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                for r in records:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO llm_requests VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            r.id,
                            r.organization,
                            r.api_key,
                            r.api,
                            r.provider,
                            r.model,
                            r.task_type,
                            r.prompt_tokens,
                            r.completion_tokens,
                            r.total_tokens,
                            nano(r.input_cost),
                            nano(r.output_cost),
                            nano(r.total_cost),
                            nano(r.saved_cost),
                            r.latency_ms,
                            r.ttft_ms,
                            r.status,
                            r.http_status,
                            r.error_class,
                            int(r.cache_hit),
                            int(r.stream),
                            ts(r.requested_at),
                            ts(r.completed_at),
                        ),
                    )
                    if cur.rowcount != 1:
                        continue
                    new += 1
                    if r.total_cost:
                        for scope, subject, period, start in spend_keys(r):
                            conn.execute(
                                "INSERT INTO llm_spend VALUES (?, ?, ?, ?, ?) "
                                "ON CONFLICT (scope, subject, period, period_start) "
                                "DO UPDATE SET spent = spent + excluded.spent",
                                (scope, subject, period, start.isoformat(), nano(r.total_cost)),
                            )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return new

        return await self._run(write)

    async def usage_report(
        self, organization: str, start: datetime, end: datetime, group_by: GroupBy
    ) -> tuple[list[UsageRow], UsageRow]:
        expr = _GROUP_SQL[group_by]

        def query(conn: sqlite3.Connection) -> tuple[list[UsageRow], UsageRow]:
            sql = f"""
            WITH base AS (
                SELECT {expr} AS g, * FROM llm_requests
                WHERE organization = ? AND requested_at >= ? AND requested_at < ?
            ),
            ranked AS (
                SELECT g, latency_ms,
                       ROW_NUMBER() OVER (PARTITION BY g ORDER BY latency_ms) AS rn,
                       COUNT(*) OVER (PARTITION BY g) AS n
                FROM base WHERE latency_ms IS NOT NULL
            ),
            pct AS (
                SELECT g,
                       MAX(CASE WHEN rn = (n + 1) / 2 THEN latency_ms END) AS p50,
                       MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN latency_ms END) AS p95
                FROM ranked GROUP BY g
            ),
            sums AS (
                SELECT g, COUNT(*) AS requests, SUM(status <> 'ok') AS errors,
                       SUM(cache_hit) AS hits, SUM(prompt_tokens) AS pt,
                       SUM(completion_tokens) AS ct, SUM(total_cost) AS cost,
                       SUM(saved_cost) AS saved
                FROM base GROUP BY g
            )
            SELECT sums.*, pct.p50, pct.p95 FROM sums LEFT JOIN pct USING (g) ORDER BY g
            """
            params = (organization, ts(start), ts(end))
            groups = [self._row(r) for r in conn.execute(sql, params)]
            total_sql = sql.replace(f"SELECT {expr} AS g,", "SELECT 'total' AS g,", 1)
            totals = [self._row(r) for r in conn.execute(total_sql, params)]
            return groups, totals[0] if totals else UsageRow("total")

        return await self._run(query)

    @staticmethod
    def _row(r: Sequence[Any]) -> UsageRow:
        return UsageRow(
            key=str(r[0]),
            requests=int(r[1]),
            errors=int(r[2] or 0),
            cache_hits=int(r[3] or 0),
            prompt_tokens=int(r[4] or 0),
            completion_tokens=int(r[5] or 0),
            cost=usd(r[6]),
            saved_cost=usd(r[7]),
            latency_p50_ms=r[8],
            latency_p95_ms=r[9],
        )

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
