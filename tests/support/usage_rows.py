"""Read usage records straight from a router's store, to check them independently."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from switchyard.router.storage.records import UsageRecord, new_id

NANO = Decimal(10) ** 9


def read_rows(database_url: str | None, state_dir: Path) -> list[dict[str, Any]]:
    if database_url:
        with psycopg.connect(database_url) as conn:
            try:
                cur = conn.execute("SELECT * FROM llm_requests ORDER BY requested_at")
            except psycopg.errors.UndefinedTable:
                return []
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    path = state_dir / "switchyard.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        scur = db.execute("SELECT * FROM llm_requests ORDER BY requested_at")
        names = [d[0] for d in scur.description]
        rows = [dict(zip(names, row, strict=True)) for row in scur.fetchall()]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    for r in rows:  # money is stored as nano-dollars in SQLite
        for k in ("input_cost", "output_cost", "total_cost", "saved_cost"):
            r[k] = Decimal(r[k]) / NANO
        r["cache_hit"] = bool(r["cache_hit"])
        r["stream"] = bool(r["stream"])
    return rows


def wait_rows(
    database_url: str | None, state_dir: Path, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = read_rows(database_url, state_dir)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def usage_record(**fields: Any) -> UsageRecord:
    """A usage record as the router writes one: a successful call, now, unless
    ``fields`` say otherwise (``requested_at`` is also its ``completed_at``)."""
    at = fields.pop("requested_at", None) or datetime.now(UTC)
    defaults: dict[str, Any] = {
        "id": new_id(),
        "organization": "default",
        "api_key": "k",
        "api": "native",
        "provider": "p",
        "model": "m",
        "task_type": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "input_cost": Decimal(0),
        "output_cost": Decimal(0),
        "saved_cost": Decimal(0),
        "latency_ms": 1.0,
        "ttft_ms": None,
        "status": "ok",
        "http_status": 200,
        "error_class": None,
        "cache_hit": False,
        "stream": False,
        "requested_at": at,
        "completed_at": at,
    }
    return UsageRecord(**(defaults | fields))
