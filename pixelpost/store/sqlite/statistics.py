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
from pixelpost.store.counters import sum_query
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


async def _sum(
    connection: aiosqlite.Connection, query: StatsQuery, by: Grouping | None
) -> dict[str | int, dict[str, int]]:
    sql, params = sum_query(query, by, table="outbox.stats", placeholder=lambda _: "?")
    found: dict[str | int, dict[str, int]] = {}
    async with connection.execute(sql, params) as cursor:
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
