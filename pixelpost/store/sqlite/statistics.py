"""The Statistics role on SQLite: rolling events up into the counters, and reading them.

A roll-up reads a range of the log and adds to one counter per (tag, link, configuration
set, hour, metric), in the outbox file. The metrics:

    sent delivered delayed rejected rendering_failures complained
    bounced:<bounceType>
    opens:human opens:machine opens:machine:<reason> opens:proxied
    clicks:human clicks:bot clicks:bot:<reason>
    unsubscribed:<source> resubscribed
    unique_opens unique_opens:human unique_opens:machine           (copies, at their first)
    unique_clicks unique_clicks:human unique_clicks:bot
    engaged unique_unsubscribes

Clicks are also counted per link (link = the URL), uniques there per copy and link.
A unique count goes to the hour of the copy's first such event: unique opens over any
period are the copies first opened in it, and `engaged` the copies a person first
opened or clicked in it (whichever came first). A Subscription event counts as
`unsubscribed` when its new preferences unsubscribe from all, `resubscribed` when they
no longer do and the old ones did. Each counter is kept per hour and per day: a
query over weeks reads the days' counters and only the hours at its ends. It all runs
in SQLite, in a few statements per batch.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from pixelpost.core.stats import Grouping, StatsQuery, StatsTable
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database


async def roll_up_next(connection: aiosqlite.Connection, limit: int) -> int:
    """Add up to `limit` events not counted yet to the statistics and move the cursor
    past them (in the caller's transaction); returns how many."""
    # The cursor is written first, so that the outbox is locked before the log is read.
    async with connection.execute(queries.LOCK_ROLLED_UP) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    after = int(row[0])
    async with connection.execute(queries.NEWEST_EVENT) as cursor:
        newest_row = await cursor.fetchone()
    newest = int(newest_row[0]) if newest_row else 0
    if newest <= after:
        return 0
    upto = min(newest, after + limit)
    await roll_up(connection, after, upto)
    await connection.execute(queries.SET_ROLLED_UP, (upto,))
    return upto - after


async def roll_up(connection: aiosqlite.Connection, after: int, upto: int) -> None:
    """Add the events with `after` < seq <= `upto` to the statistics (in the caller's
    transaction)."""
    for statement in queries.STATS_SETUP:
        await connection.execute(statement)
    await connection.execute(queries.STATS_FACTS, (after, upto))
    await connection.execute(queries.STATS_COUNTS)
    await connection.execute(queries.STATS_CANDIDATES)
    for statement in queries.STATS_FIRSTS:
        await connection.execute(statement)
    await connection.execute(queries.STATS_ADD)


HOUR = 3600
DAY = 86400
_GROUP_COLUMNS: dict[Grouping, str] = {
    "hour": "bucket",
    "day": "bucket / 86400 * 86400",
    "link": "link",
    "tag": "tag",
    "config_set": "config_set",
}

Span = tuple[int | None, int | None]
"""Buckets from (inclusive) and to (exclusive); None is open."""


def spans(query: StatsQuery) -> tuple[list[Span], Span | None]:
    """The hours and the days whose counters together cover the query's range: whole
    days from the days' counters, and only the hours at either end from the hours'."""
    since = int(query.since // HOUR * HOUR) if query.since is not None else None
    until = -int(-query.until // HOUR * HOUR) if query.until is not None else None
    if query.by == "hour":
        return [(since, until)], None
    first_day = -(-since // DAY) * DAY if since is not None else None
    last_day = until // DAY * DAY if until is not None else None
    if first_day is not None and last_day is not None and first_day >= last_day:
        return [(since, until)], None  # within a day or two: hours only
    hours: list[Span] = []
    if since is not None and first_day is not None and since < first_day:
        hours.append((since, first_day))
    if until is not None and last_day is not None and last_day < until:
        hours.append((last_day, until))
    return hours, (first_day, last_day)


def _part(
    query: StatsQuery, by: Grouping | None, period: int, span: Span
) -> tuple[str, list[object]]:
    key = _GROUP_COLUMNS[by] if by is not None else "''"
    clauses = ["period = ?"]
    params: list[object] = [period]
    if by == "tag":
        clauses.append("tag > ''")
    else:
        clauses.append("tag = ?")
        params.append(query.tag or "")
    clauses.append("link > ''" if by == "link" else "link = ''")
    if query.config_set is not None:
        clauses.append("config_set = ?")
        params.append(query.config_set)
    low, high = span
    if low is not None:
        clauses.append("bucket >= ?")
        params.append(low)
    if high is not None:
        clauses.append("bucket < ?")
        params.append(high)
    where = " AND ".join(clauses)
    return f"SELECT {key} AS key, metric, value FROM outbox.stats WHERE {where}", params  # noqa: S608 (fixed clauses)


async def _sum(
    connection: aiosqlite.Connection, query: StatsQuery, by: Grouping | None
) -> dict[str | int, dict[str, int]]:
    hours, days = spans(query)
    parts = [_part(query, by, HOUR, span) for span in hours]
    if days is not None:
        parts.append(_part(query, by, DAY, days))
    sql = " UNION ALL ".join(part for part, _ in parts)
    params = [param for _, part_params in parts for param in part_params]
    found: dict[str | int, dict[str, int]] = {}
    async with connection.execute(
        f"SELECT key, metric, sum(value) FROM ({sql}) GROUP BY key, metric",  # noqa: S608 (fixed clauses)
        params,
    ) as cursor:
        for key, metric, value in await cursor.fetchall():
            found.setdefault(key, {})[metric] = int(value)
    return found


async def read(connection: aiosqlite.Connection, query: StatsQuery) -> StatsTable:
    """The counters that `query` asks for, summed: the totals, and per group."""
    totals = (await _sum(connection, query, None)).get("", {})
    groups = await _sum(connection, query, query.by) if query.by is not None else {}
    return StatsTable(totals=totals, groups=groups)


ROLLUP_BATCH = 5000


class SQLiteStatistics:
    """The counters behind the funnel (`pixelpost.store.Statistics`)."""

    _db: Database

    async def rollup(self, *, limit: int = ROLLUP_BATCH) -> int:
        async with self._db.lock, self._db.background.execute(queries.ROLLUP_BEHIND) as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] >= row[1]:
            return 0  # nothing new: no write transaction at all

        async def work(connection: aiosqlite.Connection) -> int:
            return await roll_up_next(connection, limit)

        return await self._db.transaction(work)

    async def stats(self, query: StatsQuery) -> StatsTable:
        reader = self._db.reader
        try:
            return await read(reader, query)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise self._db.error(exc) from exc
