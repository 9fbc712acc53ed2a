"""The columns and statuses of stored usage records that both stores' SQL names.

The standard library only: the SQLite usage writer process (``sqlite_usage``) imports
this and nothing heavier.
"""

from __future__ import annotations

#: Column order of llm_requests; both stores select and copy in this order.
COLUMNS = (
    "id",
    "organization",
    "api_key",
    "api",
    "provider",
    "model",
    "task_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_cost",
    "output_cost",
    "total_cost",
    "saved_cost",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "error_class",
    "cache_hit",
    "stream",
    "requested_at",
    "completed_at",
    "trace_id",
)

#: The statuses of records of calls that did not answer their request (``core.hedges``):
#: counted apart from requests, their tokens and cost with everyone's.
HEDGE_STATUSES = ("hedged", "cancelled")
#: The same, as an SQL list: ``status IN HEDGES_SQL``.
HEDGES_SQL = "(" + ", ".join(f"'{s}'" for s in HEDGE_STATUSES) + ")"
