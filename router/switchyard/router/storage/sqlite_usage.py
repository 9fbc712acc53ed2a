"""How the SQLite store writes a batch of usage records: stage the rows, keep the new
ones, and add them into the daily rollups, key totals and spend counters, in one
transaction. It runs in a process of its own (``python`` this file, started by
``sqlite_writer.WriterProcess``), or in the store's thread when there is none.

Built-in modules and sqlite3 only, and nothing of the router: the writer process
imports this module alone, so it costs little more than a bare interpreter, sqlite3
and its page caches, kept small (about 6.3 MiB of PSS after load; 20 MiB when it
imported the store's package, 13 MiB with pickle, typing, SQLite's default 2 MiB caches
and whole batches). Its messages either way are a 4-byte length and a ``marshal`` dump
(rows are strings, numbers and None; both ends are the same interpreter): to it, rows
(at most ``sqlite_writer.PIECE``); back, the number of new records, or a store error
as (kind, message), kind "refused" (a retry will not mend it) or "unavailable".
"""

from __future__ import annotations

# SQLite's C module itself: the ``sqlite3`` package around it also imports datetime and
# collections for adapters this writer never uses (its rows are strings, numbers and None).
import _sqlite3 as sqlite3
import marshal
import os
import struct
import sys
from array import array

from switchyard.router.storage import histogram
from switchyard.router.storage.columns import COLUMNS, HEDGES_SQL

# Typing only for the checkers: ``typing`` alone is most of a megabyte in the writer.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from marshal import _Marshallable
    from typing import BinaryIO, Literal

    ErrorKind = Literal["refused", "unavailable"]

LENGTH = struct.Struct(">I")
#: SQLite's page cache per database (main, and temp for the staging table), in KiB:
#: the default is 2 MiB each. Writes append and update a day's rollups; reads are the
#: store's own connection's.
CACHE_KIB = 256

#: The columns, in order, as an SQL list.
COLUMN_LIST = ", ".join(COLUMNS)
#: A record's row, bound in ``write_usage``'s order, which is COLUMNS'.
_STAGE_ROWS = f"INSERT INTO temp.stage ({COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"

# Sums per rollup key and latency bucket over the staged new records; a bucket's
# formula is histogram.bucket().
_ROLLUP_FROM_STAGE = f"""
SELECT organization, strftime('%Y-%m-%d', requested_at, 'unixepoch'),
       coalesce(provider, ''), coalesce(model, ''), coalesce(task_type, ''),
       CASE WHEN latency_ms IS NULL THEN NULL
            WHEN latency_ms <= {histogram.LOW_MS} THEN 0
            ELSE min({histogram.BUCKETS - 1}, CAST(
                (ln(latency_ms) - ln({histogram.LOW_MS})) / {histogram.STEP!r} AS INTEGER))
       END AS bucket,
       sum(status NOT IN {HEDGES_SQL}), sum(status = 'error'), sum(cache_hit), sum(prompt_tokens),
       sum(completion_tokens), sum(total_cost), sum(saved_cost), count(*),
       sum(status IN {HEDGES_SQL})
FROM temp.stage GROUP BY 1, 2, 3, 4, 5, 6
"""

# Sums per API key and day over the staged new records.
_KEYS_FROM_STAGE = f"""
INSERT INTO llm_usage_daily_keys AS d (organization, day, api_key, requests, errors, hedged,
    cache_hits, prompt_tokens, completion_tokens, cost, saved_cost)
SELECT organization, strftime('%Y-%m-%d', requested_at, 'unixepoch'), api_key,
       sum(status NOT IN {HEDGES_SQL}), sum(status = 'error'), sum(status IN {HEDGES_SQL}),
       sum(cache_hit), sum(prompt_tokens), sum(completion_tokens), sum(total_cost),
       sum(saved_cost)
FROM temp.stage GROUP BY 1, 2, 3
ON CONFLICT (organization, day, api_key) DO UPDATE SET
    requests = d.requests + excluded.requests, errors = d.errors + excluded.errors,
    hedged = d.hedged + excluded.hedged, cache_hits = d.cache_hits + excluded.cache_hits,
    prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = d.completion_tokens + excluded.completion_tokens,
    cost = d.cost + excluded.cost, saved_cost = d.saved_cost + excluded.saved_cost
"""

# Spend per organization and per key, by day and by month. The staged records are summed
# per key and day first (a few groups, however many records), and the four counters
# come from those sums, not from four passes over the records.
_SPEND_FROM_STAGE = """
WITH per_key AS (
    SELECT organization, api_key, day, substr(day, 1, 8) || '01' AS month, sum(total_cost) AS cost
    FROM (SELECT organization, api_key, total_cost,
                 strftime('%Y-%m-%d', requested_at, 'unixepoch') AS day
          FROM temp.stage WHERE total_cost > 0)
    GROUP BY organization, api_key, day
)
INSERT INTO llm_spend (scope, subject, period, period_start, spent)
SELECT scope, subject, period, start, sum(cost) FROM (
    SELECT 'organization' AS scope, organization AS subject, 'day' AS period, day AS start,
           cost FROM per_key
    UNION ALL SELECT 'organization', organization, 'month', month, cost FROM per_key
    UNION ALL SELECT 'apiKey', organization || '/' || api_key, 'day', day, cost FROM per_key
    UNION ALL SELECT 'apiKey', organization || '/' || api_key, 'month', month, cost FROM per_key
) WHERE true
GROUP BY scope, subject, period, start
ON CONFLICT (scope, subject, period, period_start) DO UPDATE SET spent = spent + excluded.spent
"""

_STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage AS SELECT * FROM llm_requests WHERE 0"


def frame(value: _Marshallable) -> bytes:
    """One message: its length, then its marshal dump."""
    data = marshal.dumps(value)
    return LENGTH.pack(len(data)) + data


def pack_hist(hist: list[int]) -> bytes:
    return array("q", hist).tobytes()


def unpack_hist(blob: bytes) -> list[int]:
    return array("q", blob).tolist()


def open_database(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def stage(conn: sqlite3.Connection) -> None:
    """The connection's staging table, which lives with it, outside any migration."""
    conn.execute(_STAGE)
    conn.execute(f"PRAGMA temp.cache_size=-{CACHE_KIB}")


def error_kind(exc: sqlite3.Error) -> ErrorKind:
    """What a retry may mend, and what it will not."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)):
        return "refused"
    return "unavailable"  # locked, disk full, I/O error, a damaged file


def write_rows(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> int:
    """Store the rows (``COLUMNS`` order) not stored before; how many were new."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM temp.stage")
        conn.executemany(_STAGE_ROWS, rows)
        # Keep the first of any repeated id, and only ids not stored before.
        conn.execute(
            "DELETE FROM temp.stage WHERE rowid NOT IN "
            "(SELECT min(rowid) FROM temp.stage GROUP BY id) "
            "OR id IN (SELECT id FROM llm_requests)"
        )
        new = conn.execute(
            f"INSERT INTO llm_requests ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM temp.stage"
        ).rowcount
        _roll_up(conn)
        conn.execute(_KEYS_FROM_STAGE)
        conn.execute(_SPEND_FROM_STAGE)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(new)


def _roll_up(conn: sqlite3.Connection) -> None:
    """Add the staged records into their days' rollups: counts, tokens, cost and saved
    cost (integer nano-dollars) and latency histograms."""
    totals: dict[tuple[str, str, str, str, str], list[int]] = {}
    hists: dict[tuple[str, str, str, str, str], list[int]] = {}
    for row in conn.execute(_ROLLUP_FROM_STAGE):
        key = (row[0], row[1], row[2], row[3], row[4])
        counts = totals.setdefault(key, [0] * 8)
        for i in range(7):
            counts[i] += row[6 + i] or 0
        counts[7] += row[14]
        if row[5] is not None:
            hists.setdefault(key, histogram.empty())[row[5]] += row[13]
    for key, counts in totals.items():
        hist = hists.get(key) or histogram.empty()
        old = conn.execute(
            "SELECT requests, errors, cache_hits, prompt_tokens, completion_tokens, cost, "
            "saved_cost, hedged, latency_hist FROM llm_usage_daily WHERE organization = ? "
            "AND day = ? AND provider = ? AND model = ? AND task_type = ?",
            key,
        ).fetchone()
        if old is not None:
            counts = [a + b for a, b in zip(counts, old[:8], strict=True)]
            histogram.add_into(hist, unpack_hist(old[8]))
        conn.execute(
            "INSERT OR REPLACE INTO llm_usage_daily (organization, day, provider, model, "
            "task_type, requests, errors, cache_hits, prompt_tokens, completion_tokens, cost, "
            "saved_cost, hedged, latency_hist) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*key, *counts, pack_hist(hist)),
        )


def serve(path: str, source: BinaryIO, sink: BinaryIO) -> None:
    """The writer process: open the database (answering 0, or the error), then answer
    each batch, until its input closes, which is also how it learns that the router
    died (the pipe's only writer); a batch under way is finished first."""
    try:
        conn = open_database(path)
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        stage(conn)
    except sqlite3.Error as exc:
        sink.write(frame((error_kind(exc), str(exc))))
        sink.flush()
        return
    sink.write(frame(0))
    sink.flush()
    while head := source.read(LENGTH.size):
        (size,) = LENGTH.unpack(head)
        rows = marshal.loads(source.read(size))
        answer: object
        try:
            answer = write_rows(conn, rows)
        except sqlite3.Error as exc:
            answer = (error_kind(exc), str(exc))
        try:
            sink.write(frame(answer))
            sink.flush()
        except BrokenPipeError:  # the router is gone
            return


if __name__ == "__main__":
    # Answers go to a copy of stdout; what else writes to stdout goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.argv[1], sys.stdin.buffer, answers)
