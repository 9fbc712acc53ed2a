"""PostgreSQL through psycopg 3: an async connection pool, batched writes, SQL aggregates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

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
from switchyard.router.storage.records import COLUMNS, UsageRecord, record_from_row
from switchyard.router.storage.rollup import HEDGES_SQL, NO_LATENCY, Rollup, summed

log = logging.getLogger("switchyard.router.storage")

#: Serializes migrations across replicas starting at once.
MIGRATION_LOCK = 0x5377_7943  # "SwyC"

_COLUMNS = ", ".join(COLUMNS)


# One statement moves the staged records that are new into llm_requests and
# adds exactly those to the daily rollups and the spend counters, so a record
# replayed twice counts once, and the arithmetic runs in the database rather
# than on the router's event loop. The bucket formula is histogram.bucket().
_MOVE_AND_ROLL_UP = f"""
WITH ins AS (
    INSERT INTO llm_requests ({_COLUMNS})
    SELECT {_COLUMNS} FROM llm_requests_stage
    ON CONFLICT (id) DO NOTHING
    RETURNING organization, api_key, requested_at, provider, model, task_type, status,
              cache_hit, prompt_tokens, completion_tokens, total_cost, saved_cost, latency_ms
), b AS (
    SELECT organization, api_key, (requested_at AT TIME ZONE 'UTC')::date AS day,
           coalesce(provider, '') AS p, coalesce(model, '') AS m, coalesce(task_type, '') AS t,
           status, cache_hit, prompt_tokens, completion_tokens, total_cost, saved_cost,
           CASE WHEN latency_ms IS NULL THEN NULL
                WHEN latency_ms <= {histogram.LOW_MS} THEN 0
                ELSE least({histogram.BUCKETS - 1},
                           floor((ln(latency_ms) - ln({histogram.LOW_MS}))
                                 / {histogram.STEP!r}))::int
           END AS bucket
    FROM ins
), g AS (
    SELECT organization, day, p, m, t,
           count(*) FILTER (WHERE status NOT IN {HEDGES_SQL}) AS n,
           count(*) FILTER (WHERE status = 'error') AS errors,
           count(*) FILTER (WHERE status IN {HEDGES_SQL}) AS hedged,
           count(*) FILTER (WHERE cache_hit) AS hits,
           sum(prompt_tokens) AS pt, sum(completion_tokens) AS ct,
           sum(total_cost) AS cost, sum(saved_cost) AS saved
    FROM b GROUP BY organization, day, p, m, t
), h AS (
    SELECT organization, day, p, m, t, bucket, count(*) AS c
    FROM b WHERE bucket IS NOT NULL GROUP BY organization, day, p, m, t, bucket
), hist AS (
    SELECT g.organization, g.day, g.p, g.m, g.t,
           array_agg(coalesce(h.c, 0)::int ORDER BY i) AS hist
    FROM g CROSS JOIN generate_series(0, {histogram.BUCKETS - 1}) AS i
    LEFT JOIN h ON h.organization = g.organization AND h.day = g.day AND h.p = g.p
                 AND h.m = g.m AND h.t = g.t AND h.bucket = i
    GROUP BY g.organization, g.day, g.p, g.m, g.t
), keyed AS (
    INSERT INTO llm_usage_daily_keys AS k (organization, day, api_key, requests, errors,
        hedged, cache_hits, prompt_tokens, completion_tokens, cost, saved_cost)
    SELECT organization, day, api_key,
           count(*) FILTER (WHERE status NOT IN {HEDGES_SQL}),
           count(*) FILTER (WHERE status = 'error'),
           count(*) FILTER (WHERE status IN {HEDGES_SQL}),
           count(*) FILTER (WHERE cache_hit),
           sum(prompt_tokens), sum(completion_tokens), sum(total_cost), sum(saved_cost)
    FROM b GROUP BY organization, day, api_key
    ORDER BY 1, 2, 3
    ON CONFLICT (organization, day, api_key) DO UPDATE SET
        requests = k.requests + excluded.requests,
        errors = k.errors + excluded.errors,
        hedged = k.hedged + excluded.hedged,
        cache_hits = k.cache_hits + excluded.cache_hits,
        prompt_tokens = k.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = k.completion_tokens + excluded.completion_tokens,
        cost = k.cost + excluded.cost,
        saved_cost = k.saved_cost + excluded.saved_cost
    RETURNING 1
), rolled AS (
    INSERT INTO llm_usage_daily AS d (organization, day, provider, model, task_type, requests,
        errors, cache_hits, prompt_tokens, completion_tokens, cost, saved_cost, latency_hist,
        hedged)
    SELECT g.organization, g.day, g.p, g.m, g.t, g.n, g.errors, g.hits, g.pt, g.ct, g.cost,
           g.saved, hist.hist, g.hedged
    FROM g JOIN hist USING (organization, day, p, m, t)
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (organization, day, provider, model, task_type) DO UPDATE SET
        requests = d.requests + excluded.requests,
        errors = d.errors + excluded.errors,
        cache_hits = d.cache_hits + excluded.cache_hits,
        prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = d.completion_tokens + excluded.completion_tokens,
        cost = d.cost + excluded.cost,
        saved_cost = d.saved_cost + excluded.saved_cost,
        hedged = d.hedged + excluded.hedged,
        latency_hist = (
            SELECT array_agg(x + y ORDER BY n)
            FROM unnest(d.latency_hist, excluded.latency_hist) WITH ORDINALITY AS u(x, y, n)
        )
    RETURNING 1
), spent AS (
    INSERT INTO llm_spend AS s (scope, subject, period, period_start, spent)
    SELECT scope, subject, period, start, sum(total_cost) FROM (
        SELECT 'organization' AS scope, organization AS subject, 'day' AS period,
               day AS start, total_cost FROM b
        UNION ALL SELECT 'organization', organization, 'month',
               date_trunc('month', day)::date, total_cost FROM b
        UNION ALL SELECT 'apiKey', organization || '/' || api_key, 'day', day, total_cost FROM b
        UNION ALL SELECT 'apiKey', organization || '/' || api_key, 'month',
               date_trunc('month', day)::date, total_cost FROM b
    ) AS x
    WHERE total_cost > 0
    GROUP BY scope, subject, period, start
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (scope, subject, period, period_start)
        DO UPDATE SET spent = s.spent + excluded.spent
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rolled), (SELECT count(*) FROM spent),
       (SELECT count(*) FROM keyed)
"""


def _text(exc: BaseException) -> str:
    """An error's first line: PostgreSQL's own messages may go on to quote the data."""
    return str(exc).split("\n", 1)[0]


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class PostgresStore(Store):
    kind = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        self.pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=5,
            # A statement stuck on a lock or a sick server must end, so the writer
            # can spool and go on.
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "options": "-c statement_timeout=30000",
            },
        )

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=30)
        except Exception as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS switchyard_migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz "
                "NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM switchyard_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for m in MIGRATIONS:
                if m.version in done:
                    continue
                log.info("applying migration %d: %s", m.version, m.name)
                await conn.execute(m.postgres.encode())
                await conn.execute(
                    "INSERT INTO switchyard_migrations (version, name) VALUES (%s, %s)",
                    (m.version, m.name),
                )

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; every psycopg error inside becomes a ``StoreError``."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.NotSupportedError) as exc:
            raise StoreRefused(_text(exc)) from exc
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise StoreUnavailable(_text(exc)) from exc
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(_text(exc) or type(exc).__name__) from exc

    async def write_usage(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        async with self._connection() as conn, conn.transaction():
            # COPY into a per-session staging table, then move the rows that are
            # new: COPY adapts rows in C, where array parameters would not.
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS llm_requests_stage "
                "(LIKE llm_requests) ON COMMIT DELETE ROWS"
            )
            async with conn.cursor().copy(
                f"COPY llm_requests_stage ({_COLUMNS}) FROM STDIN"
            ) as copy:
                for i, r in enumerate(records):
                    if i % 256 == 255:
                        await asyncio.sleep(0)  # let requests run between slices
                    await copy.write_row(
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
                            r.input_cost,
                            r.output_cost,
                            r.total_cost,
                            r.saved_cost,
                            r.latency_ms,
                            r.ttft_ms,
                            r.status,
                            r.http_status,
                            r.error_class,
                            r.cache_hit,
                            r.stream,
                            r.requested_at,
                            r.completed_at,
                            r.trace_id,
                        )
                    )
            cur = await conn.execute(_MOVE_AND_ROLL_UP)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def usage_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT organization, day, provider, model, task_type, ''::text, requests, "
                "errors, cache_hits, prompt_tokens, completion_tokens, cost, saved_cost, "
                "latency_hist, hedged FROM llm_usage_daily WHERE organization = %s "
                "AND day >= %s AND day < %s",
                (organization, first, last),
                binary=True,  # histograms: 256 integers a row, read in C rather than parsed
            )
            rows = await cur.fetchall()
        return [
            Rollup(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                int(r[6]),
                int(r[7]),
                int(r[8]),
                int(r[9]),
                int(r[10]),
                Decimal(r[11]),
                Decimal(r[12]),
                list(r[13]),
                int(r[14]),
            )
            for r in rows
        ]

    async def usage_key_rollups(self, organization: str, first: date, last: date) -> list[Rollup]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT day, api_key, requests, errors, hedged, cache_hits, prompt_tokens, "
                "completion_tokens, cost, saved_cost FROM llm_usage_daily_keys "
                "WHERE organization = %s AND day >= %s AND day < %s",
                (organization, first, last),
            )
            rows = await cur.fetchall()
        return [
            Rollup(
                organization,
                r[0],
                "",
                "",
                "",
                r[1],
                int(r[2]),
                int(r[3]),
                int(r[5]),
                int(r[6]),
                int(r[7]),
                Decimal(r[8]),
                Decimal(r[9]),
                NO_LATENCY,
                int(r[4]),
            )
            for r in rows
        ]

    async def usage_records(
        self, organization: str, start: datetime, end: datetime
    ) -> list[UsageRecord]:
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM llm_requests WHERE organization = %s "
                "AND requested_at >= %s AND requested_at < %s",
                (organization, start, end),
            )
            rows = await cur.fetchall()
        return [record_from_row(r, Decimal, lambda t: t) for r in rows]

    async def recent_requests(
        self, organization: str, since: datetime, kind: RecentKind, limit: int
    ) -> list[UsageRecord]:
        async with self._connection() as conn:
            cur = await conn.execute(
                recent_sql(kind, "%s"),
                (organization, since, recent_limit(limit)),
            )
            rows = await cur.fetchall()
        return [record_from_row(r, Decimal, lambda t: t) for r in rows]

    async def cache_get(self, key: str, now: datetime) -> CacheEntry | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT organization, response, cost, created_at, expires_at, hit_count "
                "FROM llm_response_cache WHERE cache_key = %s AND expires_at > %s",
                (key, now),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return CacheEntry(key, row[0], row[1], Decimal(row[2]), row[3], row[4], int(row[5]))

    async def cache_put(self, entry: CacheEntry) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO llm_response_cache (cache_key, organization, response, cost, "
                "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (cache_key) DO UPDATE SET response = excluded.response, "
                "cost = excluded.cost, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at",
                (
                    entry.key,
                    entry.organization,
                    Jsonb(entry.response),
                    entry.cost,
                    entry.created_at,
                    entry.expires_at,
                ),
            )

    async def cache_hits(self, hits: dict[str, tuple[int, datetime]]) -> None:
        if not hits:
            return
        keys = sorted(hits)
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE llm_response_cache c SET hit_count = c.hit_count + h.n, "
                "last_hit_at = greatest(c.last_hit_at, h.at) "
                "FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) AS h(k, n, at) "
                "WHERE c.cache_key = h.k",
                (keys, [hits[k][0] for k in keys], [hits[k][1] for k in keys]),
            )

    async def cache_purge(self, now: datetime) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM llm_response_cache WHERE expires_at <= %s", (now,)
            )
            return cur.rowcount

    async def usage_partial(
        self, organization: str, start: datetime, end: datetime
    ) -> list[Rollup]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT (requested_at AT TIME ZONE 'UTC')::date, coalesce(provider, ''), "
                "coalesce(model, ''), coalesce(task_type, ''), api_key, "
                "CASE WHEN latency_ms IS NULL THEN -1 WHEN latency_ms <= %(low)s THEN 0 "
                "ELSE least(255, "
                "floor((ln(latency_ms) - ln(%(low)s)) / %(step)s)::int) END, "
                f"count(*) FILTER (WHERE status NOT IN {HEDGES_SQL}), "
                "count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE cache_hit), "
                "sum(prompt_tokens), sum(completion_tokens), sum(total_cost), sum(saved_cost), "
                f"count(*) FILTER (WHERE status IN {HEDGES_SQL}) "
                "FROM llm_requests WHERE organization = %(org)s AND requested_at >= %(start)s "
                "AND requested_at < %(end)s GROUP BY 1, 2, 3, 4, 5, 6",
                {
                    "low": histogram.LOW_MS,
                    "step": histogram.STEP,
                    "org": organization,
                    "start": start,
                    "end": end,
                },
            )
            rows = await cur.fetchall()
        out: dict[tuple[date, str, str, str, str], Rollup] = {}
        for row in rows:
            day, provider, model, task, key, b = row[:6]
            roll = out.get((day, provider, model, task, key))
            if roll is None:
                roll = out[(day, provider, model, task, key)] = Rollup(
                    organization, day, provider, model, task, key
                )
            roll.merge(summed(row[6:], int(b), lambda v: Decimal(v or 0)))
        return list(out.values())

    async def usage_purge(self, before: datetime, batch: int = 5000) -> int:
        async with self._connection() as conn:
            cur = await conn.execute("SELECT DISTINCT organization FROM llm_usage_daily")
            orgs = [r[0] for r in await cur.fetchall()]
        purged = 0
        for org in orgs:
            while True:
                async with self._connection() as conn:
                    cur = await conn.execute(
                        "DELETE FROM llm_requests WHERE id IN (SELECT id FROM llm_requests "
                        "WHERE organization = %s AND requested_at < %s LIMIT %s)",
                        (org, before, batch),
                    )
                    n = cur.rowcount
                purged += n
                if n < batch:
                    break
        return purged

    async def turn_put(self, turn: Turn) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO llm_turns (id, organization, kind, previous_id, depth, answer, "
                "items, context, conversation_bytes, conversation_tokens, created_at, "
                "expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                    turn.created_at,
                    turn.expires_at,
                ),
            )

    async def turn_head(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> TurnHead | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT depth, conversation_bytes, conversation_tokens FROM llm_turns "
                "WHERE id = %s AND organization = %s AND kind = %s AND expires_at > %s "
                "AND answer IS NOT NULL",
                (id, organization, kind, now),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return TurnHead(id, kind, int(row[0]), int(row[1]), int(row[2]))

    async def turn_answer(
        self, organization: str, kind: TurnKind, id: str, now: datetime
    ) -> bytes | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT answer FROM llm_turns WHERE id = %s AND organization = %s "
                "AND kind = %s AND expires_at > %s AND answer IS NOT NULL",
                (id, organization, kind, now),
                binary=True,
            )
            row = await cur.fetchone()
        return None if row is None else bytes(row[0])

    async def turn_chain(self, organization: str, id: str) -> list[StoredTurn]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "WITH RECURSIVE chain AS ("
                " SELECT id, previous_id, depth, answer, items, context FROM llm_turns"
                " WHERE id = %(id)s AND organization = %(org)s"
                " UNION ALL"
                " SELECT t.id, t.previous_id, t.depth, t.answer, t.items, t.context"
                " FROM llm_turns t JOIN chain c ON t.id = c.previous_id"
                " WHERE t.organization = %(org)s"
                ") SELECT id, depth, answer, items, context FROM chain ORDER BY depth",
                {"id": id, "org": organization},
                binary=True,
            )
            chain: list[StoredTurn] = []
            async for r in cur:
                chain.append(StoredTurn(r[0], int(r[1]), _bytes(r[2]), _bytes(r[3]), _bytes(r[4])))
        return chain

    async def turn_delete(self, organization: str, kind: TurnKind, id: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM llm_turns t WHERE id = %s AND organization = %s AND kind = %s "
                "AND answer IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM llm_turns c WHERE c.previous_id = t.id)",
                (id, organization, kind),
            )
            if cur.rowcount:
                return True
            # Later turns point at it: its content goes, a marker stays until they do.
            cur = await conn.execute(
                "UPDATE llm_turns SET answer = NULL, items = NULL, context = NULL, "
                "expires_at = least(expires_at, now()) "
                "WHERE id = %s AND organization = %s AND kind = %s AND answer IS NOT NULL",
                (id, organization, kind),
            )
            return cur.rowcount > 0

    async def turn_purge(self, now: datetime, batch: int = 5000) -> int:
        purged = 0
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "DELETE FROM llm_turns WHERE id IN (SELECT t.id FROM llm_turns t "
                    "WHERE t.expires_at <= %s AND NOT EXISTS "
                    "(SELECT 1 FROM llm_turns c WHERE c.previous_id = t.id) LIMIT %s)",
                    (now, batch),
                )
                n = cur.rowcount
            purged += n
            if n == 0:
                return purged

    async def spend(self, subjects: Sequence[tuple[str, str]], day: date, month: date) -> Spend:
        if not subjects:
            return Spend()
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT scope, subject, period, period_start, spent FROM llm_spend "
                "WHERE (scope, subject) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "AND ((period = 'day' AND period_start = %s) "
                "OR (period = 'month' AND period_start = %s))",
                ([s[0] for s in subjects], [s[1] for s in subjects], day, month),
            )
            rows = await cur.fetchall()
        return Spend({(r[0], r[1], r[2], r[3]): Decimal(r[4]) for r in rows})
