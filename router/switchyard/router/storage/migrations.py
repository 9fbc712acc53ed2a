"""Versioned schema migrations, one list for both dialects, applied in order at start."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    postgres: str
    sqlite: str


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "usage records and daily rollups, response cache, spend counters",
        postgres="""
CREATE TABLE llm_requests (
    id uuid PRIMARY KEY,
    organization text NOT NULL,
    api_key text NOT NULL,
    api text NOT NULL,
    provider text,
    model text,
    task_type text,
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    total_tokens integer NOT NULL,
    input_cost numeric(20, 9) NOT NULL,
    output_cost numeric(20, 9) NOT NULL,
    total_cost numeric(20, 9) NOT NULL,
    saved_cost numeric(20, 9) NOT NULL,
    latency_ms real,
    ttft_ms real,
    status text NOT NULL,
    http_status smallint NOT NULL,
    error_class text,
    cache_hit boolean NOT NULL,
    stream boolean NOT NULL,
    requested_at timestamptz NOT NULL,
    completed_at timestamptz NOT NULL
);
CREATE INDEX llm_requests_org_time ON llm_requests (organization, requested_at);
-- One row per organization, UTC day, provider, model and task type, kept by the
-- usage writer in the transaction that stores the records: usage queries read
-- these instead of scanning millions of records. '' stands for "none".
CREATE TABLE llm_usage_daily (
    organization text NOT NULL,
    day date NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    task_type text NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    cache_hits bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost numeric(24, 9) NOT NULL,
    saved_cost numeric(24, 9) NOT NULL,
    latency_hist integer[] NOT NULL,
    PRIMARY KEY (organization, day, provider, model, task_type)
);
CREATE TABLE llm_response_cache (
    cache_key text PRIMARY KEY,
    organization text NOT NULL,
    response jsonb NOT NULL,
    cost numeric(20, 9) NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    hit_count bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz
);
CREATE INDEX llm_response_cache_expires ON llm_response_cache (expires_at);
CREATE TABLE llm_spend (
    scope text NOT NULL,
    subject text NOT NULL,
    period text NOT NULL,
    period_start date NOT NULL,
    spent numeric(20, 9) NOT NULL,
    PRIMARY KEY (scope, subject, period, period_start)
);
""",
        # Money as integer nano-dollars: SQLite would sum decimal text as floats.
        sqlite="""
CREATE TABLE llm_requests (
    id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    api_key TEXT NOT NULL,
    api TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    task_type TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    input_cost INTEGER NOT NULL,
    output_cost INTEGER NOT NULL,
    total_cost INTEGER NOT NULL,
    saved_cost INTEGER NOT NULL,
    latency_ms REAL,
    ttft_ms REAL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error_class TEXT,
    cache_hit INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    requested_at REAL NOT NULL,
    completed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX llm_requests_org_time ON llm_requests (organization, requested_at);
CREATE TABLE llm_usage_daily (
    organization TEXT NOT NULL,
    day TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    task_type TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    saved_cost INTEGER NOT NULL,
    latency_hist BLOB NOT NULL,
    PRIMARY KEY (organization, day, provider, model, task_type)
) WITHOUT ROWID;
CREATE TABLE llm_response_cache (
    cache_key TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    response TEXT NOT NULL,
    cost INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    hit_count INTEGER NOT NULL DEFAULT 0,
    last_hit_at REAL
);
CREATE INDEX llm_response_cache_expires ON llm_response_cache (expires_at);
CREATE TABLE llm_spend (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    spent INTEGER NOT NULL,
    PRIMARY KEY (scope, subject, period, period_start)
);
""",
    ),
    Migration(
        2,
        "responses kept for GET /v1/responses/{id} and previous_response_id",
        postgres="""
CREATE TABLE llm_responses (
    id text PRIMARY KEY,
    organization text NOT NULL,
    response jsonb NOT NULL,
    input_items jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX llm_responses_expires ON llm_responses (expires_at);
""",
        sqlite="""
CREATE TABLE llm_responses (
    id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX llm_responses_expires ON llm_responses (expires_at);
""",
    ),
    Migration(
        3,
        "kept conversations as chains of turns, each stored once",
        postgres="""
CREATE TABLE llm_turns (
    id text PRIMARY KEY,
    organization text NOT NULL,
    kind text NOT NULL,
    previous_id text,
    depth integer NOT NULL,
    answer bytea,
    items bytea,
    context bytea,
    conversation_bytes bigint NOT NULL,
    conversation_tokens bigint NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX llm_turns_previous ON llm_turns (previous_id) WHERE previous_id IS NOT NULL;
CREATE INDEX llm_turns_expires ON llm_turns (expires_at);
-- A response kept before held its whole conversation: it becomes a first turn.
INSERT INTO llm_turns
SELECT id, organization,
       CASE WHEN response->>'object' = 'response' THEN 'response' ELSE 'thread' END,
       NULL, 0, convert_to(response::text, 'UTF8'), convert_to(input_items::text, 'UTF8'),
       NULL, octet_length(response::text) + octet_length(input_items::text), 0,
       created_at, expires_at
FROM llm_responses;
DROP TABLE llm_responses;
""",
        sqlite="""
CREATE TABLE llm_turns (
    id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    kind TEXT NOT NULL,
    previous_id TEXT,
    depth INTEGER NOT NULL,
    answer BLOB,
    items BLOB,
    context BLOB,
    conversation_bytes INTEGER NOT NULL,
    conversation_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX llm_turns_previous ON llm_turns (previous_id) WHERE previous_id IS NOT NULL;
CREATE INDEX llm_turns_expires ON llm_turns (expires_at);
INSERT INTO llm_turns
SELECT id, organization,
       CASE WHEN json_extract(response, '$.object') = 'response' THEN 'response' ELSE 'thread' END,
       NULL, 0, CAST(response AS BLOB), CAST(input_items AS BLOB), NULL,
       length(CAST(response AS BLOB)) + length(CAST(input_items AS BLOB)), 0,
       created_at, expires_at
FROM llm_responses;
DROP TABLE llm_responses;
""",
    ),
    Migration(
        4,
        "daily rollups count calls that did not answer their request apart",
        postgres="""
ALTER TABLE llm_usage_daily ADD COLUMN hedged bigint NOT NULL DEFAULT 0;
""",
        sqlite="""
ALTER TABLE llm_usage_daily ADD COLUMN hedged INTEGER NOT NULL DEFAULT 0;
""",
    ),
    Migration(
        5,
        "spend and requests per API key and day, and the trace of each usage record",
        # Its own table: the rollups above stay one row per provider, model and task, so
        # an organization's reports do not grow with its number of keys. Days rolled up
        # before count every key's usage as the key '' (unknown), so that a report by
        # key adds up to the same totals as any other.
        postgres="""
CREATE TABLE llm_usage_daily_keys (
    organization text NOT NULL,
    day date NOT NULL,
    api_key text NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    hedged bigint NOT NULL,
    cache_hits bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost numeric(24, 9) NOT NULL,
    saved_cost numeric(24, 9) NOT NULL,
    PRIMARY KEY (organization, day, api_key)
);
INSERT INTO llm_usage_daily_keys
SELECT organization, day, '', sum(requests), sum(errors), sum(hedged), sum(cache_hits),
       sum(prompt_tokens), sum(completion_tokens), sum(cost), sum(saved_cost)
FROM llm_usage_daily GROUP BY organization, day;
ALTER TABLE llm_requests ADD COLUMN trace_id text;
-- The last hour's slowest requests are picked from the index alone, not from a
-- table lookup for each record of the hour.
DROP INDEX llm_requests_org_time;
CREATE INDEX llm_requests_org_time ON llm_requests (organization, requested_at, latency_ms, status);
""",
        sqlite="""
CREATE TABLE llm_usage_daily_keys (
    organization TEXT NOT NULL,
    day TEXT NOT NULL,
    api_key TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    hedged INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    saved_cost INTEGER NOT NULL,
    PRIMARY KEY (organization, day, api_key)
) WITHOUT ROWID;
INSERT INTO llm_usage_daily_keys
SELECT organization, day, '', sum(requests), sum(errors), sum(hedged), sum(cache_hits),
       sum(prompt_tokens), sum(completion_tokens), sum(cost), sum(saved_cost)
FROM llm_usage_daily GROUP BY organization, day;
ALTER TABLE llm_requests ADD COLUMN trace_id TEXT;
DROP INDEX llm_requests_org_time;
CREATE INDEX llm_requests_org_time ON llm_requests (organization, requested_at, latency_ms, status);
""",
    ),
]
