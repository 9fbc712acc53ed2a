"""Read usage records straight from a router's store, to check them independently."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

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
