"""``GET /api/v1/llm/usage``: requests, tokens, cost, errors and latency by period or dimension."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.errors import BadRequest, StorageUnavailable
from switchyard.router.http.auth import authenticate
from switchyard.router.http.services import services
from switchyard.router.storage.base import GROUP_BY, GroupBy, StoreUnavailable, UsageRow

MAX_RANGE = timedelta(days=3660)
#: The instants a query may name: no usage predates 1970, and every bucket of a range
#: ending before 9999 (a day, a month later) is still a date Python and the stores hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def parse_bound(value: str, field: str, *, end: bool) -> datetime:
    """A date (``2026-11-01``) or an ISO datetime, as UTC; naive times are UTC.

    A date as ``endDate`` includes that whole day.
    """
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            at = datetime.combine(d, time.min, UTC)
            if end:
                at += timedelta(days=1)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise BadRequest(
            f"{field}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time",
            field=field,
        ) from None
    except OverflowError:  # past year 9999 or before year 1 once in UTC
        at = EARLIEST - timedelta(days=1)
    if not EARLIEST <= at <= LATEST:
        raise BadRequest(
            f"{field}: {value!r} is out of range; dates run from 1970-01-01 to 9998-12-31",
            field=field,
        )
    return at


def parse_range(start_date: str | None, end_date: str | None) -> tuple[datetime, datetime]:
    """``startDate`` and ``endDate`` as a range: by default the 30 whole UTC days up to
    now; at most ten years."""
    now = datetime.now(UTC)
    end = parse_bound(end_date, "endDate", end=True) if end_date is not None else now
    start = (
        parse_bound(start_date, "startDate", end=False)
        if start_date is not None
        # Whole UTC days: from midnight 30 days before the end.
        else max(EARLIEST, datetime.combine((end - timedelta(days=30)).date(), time.min, UTC))
    )
    if start >= end:
        raise BadRequest("endDate: must be after startDate", field="endDate")
    if end - start > MAX_RANGE:
        raise BadRequest("endDate: the range may span at most ten years", field="endDate")
    return start, end


def money(d: Decimal) -> str:
    """An amount of dollars as JSON gives it: a decimal string, exact, without exponent."""
    return format(d.normalize(), "f")


def row_json(r: UsageRow) -> dict[str, Any]:
    return {
        "key": r.key,
        "requests": r.requests,
        "errors": r.errors,
        "hedgedCalls": r.hedged,
        "cacheHits": r.cache_hits,
        "promptTokens": r.prompt_tokens,
        "completionTokens": r.completion_tokens,
        "totalTokens": r.prompt_tokens + r.completion_tokens,
        "cost": money(r.cost),
        "savedCost": money(r.saved_cost),
        "latencyMs": {
            "p50": None if r.latency_p50_ms is None else round(r.latency_p50_ms, 3),
            "p95": None if r.latency_p95_ms is None else round(r.latency_p95_ms, 3),
        },
    }


async def usage(request: Request) -> Response:
    s = services(request)
    catalog = s.gateway.require_catalog()
    caller = authenticate(request, catalog, "usage:read")
    q = request.query_params
    unknown = sorted(set(q) - {"startDate", "endDate", "groupBy"})
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a known parameter", field=unknown[0])
    start, end = parse_range(q.get("startDate"), q.get("endDate"))
    group_by = q.get("groupBy", "day")
    if group_by not in GROUP_BY:
        raise BadRequest(
            f"groupBy: must be one of {', '.join(GROUP_BY)}; got {group_by!r}", field="groupBy"
        )
    assert s.store is not None
    try:
        groups, total = await s.store.usage_report(
            caller.organization, start, end, _as_group(group_by)
        )
    except (StoreUnavailable, OSError) as exc:
        raise StorageUnavailable(f"usage storage is unavailable: {exc}") from None
    body = {
        "organization": caller.organization,
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "groupBy": group_by,
        "groups": [row_json(g) for g in groups],
        "totals": row_json(total),
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _as_group(value: str) -> GroupBy:
    for g in GROUP_BY:
        if g == value:
            return g
    raise AssertionError(value)
