"""The Statistics role on PostgreSQL: the roll-up of pixelpost.store.sqlite.statistics
(the same counters, metrics and uniques), run by one process of the cluster at a time
(an advisory lock: the others find it taken and leave the work to it), and the same
reads."""

from __future__ import annotations

from pixelpost.core.stats import Grouping, StatsQuery, StatsTable
from pixelpost.store.counters import sum_query
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Connection, Database

ROLLUP_BATCH = 5000


async def roll_up_next(connection: Connection, limit: int) -> int:
    """Add up to `limit` events not counted yet to the statistics (in the caller's
    transaction); returns how many were taken."""
    await connection.execute(queries.STATS_BATCH, limit)
    taken = int(await connection.fetchval(queries.STATS_BATCH_SIZE))
    if taken:
        await connection.execute(queries.STATS_FACTS)
        await connection.execute(queries.STATS_ROWS)
        await connection.execute(queries.STATS_FIRSTS)
        await connection.execute(queries.STATS_ADD)
    return taken


async def _sum(
    connection: Connection, query: StatsQuery, by: Grouping | None
) -> dict[str | int, dict[str, int]]:
    sql, params = sum_query(query, by, table="stats", placeholder=lambda n: f"${n}")
    found: dict[str | int, dict[str, int]] = {}
    for key, metric, value in await connection.fetch(sql, *params):
        found.setdefault(key, {})[metric] = int(value)
    return found


class PostgreSQLStatistics:
    """The counters behind the funnel (`pixelpost.store.Statistics`)."""

    _db: Database

    async def rollup(self, *, limit: int = ROLLUP_BATCH) -> int:
        async with self._db.connection() as connection:
            if not await connection.fetchval(queries.ROLLUP_BEHIND):
                return 0  # nothing new: no write transaction at all

        async def work(connection: Connection) -> int:
            return await roll_up_next(connection, limit)

        return await self._db.once("rollup", work, 0)

    async def stats(self, query: StatsQuery) -> StatsTable:
        async with (
            self._db.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            totals = (await _sum(connection, query, None)).get("", {})
            groups = await _sum(connection, query, query.by) if query.by is not None else {}
        return StatsTable(totals=totals, groups=groups)
