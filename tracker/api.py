"""The statistics API: `GET /api/v1/stats`, for the bearer token `tracker.api_token`
(or the dashboard's session cookie).

    config_set  one configuration set (default: all mail)
    tag         one message tag, name:value
    since       from (ISO 8601 date or time, or a duration ago: 24h, 7d); hours are whole
    until       to, exclusive (default: now)
    by          hour, day, link, tag or config_set: also answer per group
    limit       most groups (default 100)

The answer is `pixelpost.core.stats.report`'s JSON: the funnel, from sent to engaged
(copies a person opened or clicked) and unsubscribed (by source, and resubscribed), with
its rates, in total and per group.

`GET /api/v1/reputation`, for the same token: the bounce and complaint rates of each
configuration set over a rolling window, with their statuses and SES's thresholds
(`pixelpost.core.reputation.report`'s JSON).

    config_set  one configuration set (default: every set, and all mail together)
    window      how far back, from 1h to 90d (default 7d); hours are whole

A bad parameter gets 400 naming it; a wrong token 401 (after a delay), and a client
with too many wrong tokens lately 429.
Every API route checks its request that way (`refusal`) and answers errors alike
(`api_error`): the suppression list's too (`tracker.suppression`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from pixelpost.core import reputation
from pixelpost.core.stats import StatsQuery, StatsQueryError, StatsTable, parse_query, report
from pixelpost.store import StoreError
from tracker.auth import Access, Outcome, Verdict

log = logging.getLogger(__name__)

API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every answer of the API (`tracker.suppression`'s too)."""


class StatsReader(Protocol):
    async def stats(self, query: StatsQuery) -> StatsTable: ...


def api_error(status: int, message: str, **headers: str) -> web.Response:
    """An API error: `{"error": message}`."""
    return web.json_response({"error": message}, status=status, headers={**API_HEADERS, **headers})


def _refused(verdict: Verdict) -> web.Response:
    """The answer to a request whose credentials were not good enough."""
    if verdict.outcome is Outcome.THROTTLED:
        return api_error(
            429,
            f"too many wrong tokens: try again in {verdict.retry_after} seconds",
            **{"Retry-After": str(verdict.retry_after)},
        )
    if verdict.outcome is Outcome.WRONG:
        # RFC 6750: a token was presented and is not the right one.
        return api_error(
            401,
            "wrong token: this is not the tracker's api_token "
            "(Authorization: Bearer <tracker.api_token>)",
            **{"WWW-Authenticate": 'Bearer realm="pixelpost", error="invalid_token"'},
        )
    return api_error(
        401,
        "a bearer token is needed (Authorization: Bearer <tracker.api_token>)",
        **{"WWW-Authenticate": 'Bearer realm="pixelpost"'},
    )


async def refusal(access: Access, request: web.Request) -> web.Response | None:
    """None when `request` may use the API; else the answer to it: 404 while the API is
    off, 401 for no token or a wrong one, 429 for a client that tried too many."""
    if not access.enabled:
        return api_error(404, "the API is off: set tracker.api_token to turn it on")
    verdict = await access.admit(request, "api")
    if verdict.outcome is not Outcome.ALLOWED:
        return _refused(verdict)
    return None


def add_api(
    app: web.Application,
    *,
    access: Access,
    stats: StatsReader,
    clock: Callable[[], float] = time.time,
) -> None:
    """Serve `/api/v1/stats` and `/api/v1/reputation` from `stats`."""

    async def read(query: StatsQuery) -> StatsTable | web.Response:
        try:
            return await stats.stats(query)
        except StoreError as exc:
            log.error("api: cannot read statistics: %s", exc)
            return api_error(503, "the statistics cannot be read now; try again")

    async def stats_view(request: web.Request) -> web.Response:
        if (refused := await refusal(access, request)) is not None:
            return refused
        now = clock()
        try:
            query = parse_query(request.query, now=now)
        except StatsQueryError as exc:
            return api_error(400, str(exc))
        table = await read(query)
        if isinstance(table, web.Response):
            return table
        return web.json_response(report(query, table, now=now), headers=API_HEADERS)

    async def reputation_view(request: web.Request) -> web.Response:
        if (refused := await refusal(access, request)) is not None:
            return refused
        now = clock()
        try:
            query = reputation.parse_query(request.query)
        except StatsQueryError as exc:
            return api_error(400, str(exc))
        table = await read(reputation.stats_query(query, now=now))
        if isinstance(table, web.Response):
            return table
        return web.json_response(reputation.report(query, table, now=now), headers=API_HEADERS)

    app.router.add_get("/api/v1/stats", stats_view)
    app.router.add_get("/api/v1/reputation", reputation_view)
