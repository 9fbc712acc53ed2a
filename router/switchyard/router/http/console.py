"""``/console``: a read-only page of an organization's spend and health.

The page itself holds no data: its script asks the JSON endpoints below with the API
key the user gives it (kept in the tab's session storage, sent as a bearer token like
any client's), so a key with ``usage:read`` sees its own organization's figures and
nothing else. Every asset is served from the package: the console works with no
internet, and its Content-Security-Policy lets the page load nothing from anywhere else.

The figures come from the daily rollups the usage API reads, so a range of years over
millions of records costs a read of a few thousand rows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.router.errors import BadRequest, NotFound, StorageUnavailable
from switchyard.router.http.admin import provider_views
from switchyard.router.http.auth import authenticate
from switchyard.router.http.services import services
from switchyard.router.http.usage_api import money, parse_range, row_json
from switchyard.router.storage.base import StoreUnavailable
from switchyard.router.storage.records import UsageRecord
from switchyard.router.storage.rollup import (
    GROUP_BY,
    GroupBy,
    TimeGroup,
    periods_between,
    report,
    series,
)

#: A plot's periods, and what it may be split by: the usage API's other ``groupBy``s.
PERIODS: dict[str, TimeGroup] = {"day": "day", "week": "week", "month": "month"}
DIMENSIONS: dict[str, GroupBy] = {g: g for g in GROUP_BY if g not in PERIODS}
#: A plot over time has at most this many periods: a longer range takes longer periods.
MAX_PERIODS = 400
#: The slowest and the failed requests listed: how far back, and how many of each.
RECENT = timedelta(hours=1)
SLOWEST = 20
FAILED = 50

_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Nothing but the router's own assets and endpoints.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@cache
def _asset(name: str) -> bytes:
    return resources.files("switchyard.router.http").joinpath("console_assets", name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_asset("index.html"), media_type="text/html", headers=_PAGE_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"the console has no asset {name!r}")
    return Response(_asset(name), media_type=media_type, headers=_PAGE_HEADERS)


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=_DATA_HEADERS)


def _auto_period(start: datetime, end: datetime) -> TimeGroup:
    days = (end - start).days
    return "day" if days <= 92 else "week" if days <= 731 else "month"


async def usage(request: Request) -> Response:
    """Spend and requests over a range: totals, by one dimension, and per period."""
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "usage:read")
    q = request.query_params
    unknown = sorted(set(q) - {"startDate", "endDate", "by", "period"})
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a known parameter", field=unknown[0])
    start, end = parse_range(q.get("startDate"), q.get("endDate"))
    by = DIMENSIONS.get(q.get("by", "model"))
    if by is None:
        raise BadRequest(f"by: must be one of {', '.join(DIMENSIONS)}", field="by")
    period = PERIODS.get(q["period"]) if "period" in q else _auto_period(start, end)
    if period is None:
        raise BadRequest(f"period: must be one of {', '.join(PERIODS)}", field="period")
    last_day = (end - timedelta(microseconds=1)).date()
    periods = periods_between(start.date(), last_day, period)
    if len(periods) > MAX_PERIODS:
        raise BadRequest(
            f"period: {len(periods)} {period}s is too many to plot (at most {MAX_PERIODS}); "
            "ask for longer periods",
            field="period",
        )
    try:
        rollups = await s.store.usage_range(caller.organization, start, end, by_key=by == "apiKey")
    except (StoreUnavailable, OSError) as exc:
        raise StorageUnavailable(f"usage storage is unavailable: {exc}") from None
    # Thousands of rollups for a long range: summed off the event loop, which serves
    # every other tenant's requests meanwhile.
    (groups, total), plot = await asyncio.to_thread(
        lambda: (report(rollups, by), series(rollups, period, by, periods))
    )
    return _json(
        {
            "organization": caller.organization,
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
            "period": period,
            "by": by,
            "totals": row_json(total),
            "groups": [row_json(g) for g in groups],
            "series": {
                "periods": plot.periods,
                "groups": plot.groups,
                "cost": [[money(c) for c in row] for row in plot.cost],
                "requests": plot.requests,
            },
        }
    )


async def health(request: Request) -> Response:
    """The organization's providers, breakers and models taken out, and its budgets."""
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "usage:read")
    budgets = s.accountant.budgets
    standing = budgets.standing(caller.organization) if budgets is not None else []
    return _json(
        {
            "organization": caller.organization,
            "providers": provider_views(s, caller.organization),
            "budgets": [
                {
                    "apiKey": b.api_key,
                    "period": b.period,
                    "periodStart": b.start.isoformat(),
                    "limit": money(b.limit),
                    "spent": money(b.spent),
                    "usedRatio": round(float(b.spent / b.limit), 4) if b.limit else 1.0,
                }
                for b in standing
            ],
        }
    )


def _request_json(r: UsageRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "requestedAt": r.requested_at.isoformat(),
        "apiKey": r.api_key,
        "api": r.api,
        "provider": r.provider,
        "model": r.model,
        "taskType": r.task_type,
        "latencyMs": None if r.latency_ms is None else round(r.latency_ms, 1),
        "ttftMs": None if r.ttft_ms is None else round(r.ttft_ms, 1),
        "status": r.status,
        "httpStatus": r.http_status,
        "errorClass": r.error_class,
        "stream": r.stream,
        "promptTokens": r.prompt_tokens,
        "completionTokens": r.completion_tokens,
        "cost": money(r.total_cost),
        "traceId": r.trace_id,
    }


async def recent(request: Request) -> Response:
    """The slowest and the failed requests of the last hour, with their trace ids."""
    s = services(request)
    caller = authenticate(request, s.gateway.require_catalog(), "usage:read")
    since = datetime.now(UTC) - RECENT
    try:
        slowest = await s.store.recent_requests(caller.organization, since, "slowest", SLOWEST)
        failed = await s.store.recent_requests(caller.organization, since, "failed", FAILED)
    except (StoreUnavailable, OSError) as exc:
        raise StorageUnavailable(f"usage storage is unavailable: {exc}") from None
    return _json(
        {
            "organization": caller.organization,
            "since": since.isoformat(),
            "tracing": s.tracing is not None,
            "slowest": [_request_json(r) for r in slowest],
            "failed": [_request_json(r) for r in failed],
        }
    )
