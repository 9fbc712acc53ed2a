"""PostgreSQL through psycopg 3: an async connection pool, batched writes, SQL aggregates."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

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

log = logging.getLogger("switchyard.router.storage")

#: Serializes migrations across replicas starting at once.
MIGRATION_LOCK = 0x5377_7943  # "SwyC"

#: groupBy → SQL expression. An allow-list: groupBy never reaches SQL as text.
_GROUP_SQL: dict[GroupBy, str] = {
    "day": "to_char(date_trunc('day', requested_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    "week": "to_char(date_trunc('week', requested_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    "month": "to_char(date_trunc('month', requested_at AT TIME ZONE 'UTC'), 'YYYY-MM')",
    "model": "coalesce(model, '(none)')",
    "task": "coalesce(task_type, '(none)')",
    "provider": "coalesce(provider, '(none)')",
}

_AGGREGATES = """
    count(*),
    count(*) FILTER (WHERE status <> 'ok'),
    count(*) FILTER (WHERE cache_hit),
    coalesce(sum(prompt_tokens), 0),
    coalesce(sum(completion_tokens), 0),
    coalesce(sum(total_cost), 0),
    coalesce(sum(saved_cost), 0),
    percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms),
    percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms)
"""

_COLUMNS = (
    "id, organization, api_key, api, provider, model, task_type, prompt_tokens, "
    "completion_tokens, total_tokens, input_cost, output_cost, total_cost, saved_cost, "
    "latency_ms, ttft_ms, status, http_status, error_class, cache_hit, stream, "
    "requested_at, completed_at"
)
_TYPES = (
    "uuid[], text[], text[], text[], text[], text[], text[], int[], int[], int[], numeric[], "
    "numeric[], numeric[], numeric[], real[], real[], text[], smallint[], text[], bool[], bool[], "
    "timestamptz[], timestamptz[]"
)


def _row(values: Sequence[Any], key: str) -> UsageRow:
    return UsageRow(
        key=key,
        requests=int(values[0]),
        errors=int(values[1]),
        cache_hits=int(values[2]),
        prompt_tokens=int(values[3]),
        completion_tokens=int(values[4]),
        cost=Decimal(values[5]),
        saved_cost=Decimal(values[6]),
        latency_p50_ms=None if values[7] is None else float(values[7]),
        latency_p95_ms=None if values[8] is None else float(values[8]),
    )


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
            kwargs={"autocommit": True, "connect_timeout": 5},
        )

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=30)
        except Exception as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        async with self.pool.connection() as conn, conn.transaction():
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

    async def write_usage(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        cols: list[list[Any]] = [[] for _ in range(23)]
        for r in records:
            values = (
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
            )
            for i, v in enumerate(values):
                cols[i].append(v)
        types = _TYPES.split(", ")
        unnest = ", ".join(f"%s::{t}" for t in types)
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    f"INSERT INTO llm_requests ({_COLUMNS}) SELECT * FROM unnest({unnest}) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id::text",
                    cols,
                )
                new = {row[0] for row in await cur.fetchall()}
                spend: dict[tuple[str, str, str, date], Decimal] = defaultdict(Decimal)
                for r in records:
                    if r.id in new and r.total_cost:
                        for key in spend_keys(r):
                            spend[key] += r.total_cost
                if spend:
                    keys = sorted(spend)  # a fixed order: no deadlocks between replicas
                    await conn.execute(
                        "INSERT INTO llm_spend (scope, subject, period, period_start, spent) "
                        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::date[], "
                        "%s::numeric[]) ON CONFLICT (scope, subject, period, period_start) "
                        "DO UPDATE SET spent = llm_spend.spent + excluded.spent",
                        (
                            [k[0] for k in keys],
                            [k[1] for k in keys],
                            [k[2] for k in keys],
                            [k[3] for k in keys],
                            [spend[k] for k in keys],
                        ),
                    )
                return len(new)
        except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        except Exception as exc:  # psycopg_pool.PoolTimeout and friends
            if type(exc).__module__.startswith("psycopg_pool"):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def usage_report(
        self, organization: str, start: datetime, end: datetime, group_by: GroupBy
    ) -> tuple[list[UsageRow], UsageRow]:
        expr = _GROUP_SQL[group_by]
        where = "organization = %s AND requested_at >= %s AND requested_at < %s"
        params = (organization, start, end)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {expr} AS g, {_AGGREGATES} FROM llm_requests WHERE {where} "
                "GROUP BY g ORDER BY g",
                params,
            )
            groups = [_row(row[1:], str(row[0])) for row in await cur.fetchall()]
            cur = await conn.execute(
                f"SELECT {_AGGREGATES} FROM llm_requests WHERE {where}",
                params,
            )
            total = await cur.fetchone()
        assert total is not None
        return groups, _row(total, "total")

    async def cache_get(self, key: str, now: datetime) -> CacheEntry | None:
        async with self.pool.connection() as conn:
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
        async with self.pool.connection() as conn:
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
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE llm_response_cache c SET hit_count = c.hit_count + h.n, "
                "last_hit_at = greatest(c.last_hit_at, h.at) "
                "FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) AS h(k, n, at) "
                "WHERE c.cache_key = h.k",
                (keys, [hits[k][0] for k in keys], [hits[k][1] for k in keys]),
            )

    async def cache_purge(self, now: datetime) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM llm_response_cache WHERE expires_at <= %s", (now,)
            )
            return cur.rowcount

    async def spend(self, subjects: Sequence[tuple[str, str]], day: date, month: date) -> Spend:
        if not subjects:
            return Spend()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT scope, subject, period, period_start, spent FROM llm_spend "
                "WHERE (scope, subject) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "AND ((period = 'day' AND period_start = %s) "
                "OR (period = 'month' AND period_start = %s))",
                ([s[0] for s in subjects], [s[1] for s in subjects], day, month),
            )
            rows = await cur.fetchall()
        return Spend({(r[0], r[1], r[2], r[3]): Decimal(r[4]) for r in rows})
