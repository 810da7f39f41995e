"""The Retention role on PostgreSQL: what pixelpost.store.sqlite.retention keeps and
deletes, in set-based batches, by one process of the cluster at a time (an advisory
lock). An event goes once it is routed, counted and has no delivery left to make; a
copy's record becomes a stub once none of its events waits to be routed or delivered."""

from __future__ import annotations

from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Connection, Database, row_count

PURGE_BATCH = 5000


class PostgreSQLRetention:
    """`store.retention_days`, applied (`pixelpost.store.Retention`)."""

    _db: Database

    async def purge(self, before: float, *, batch: int = PURGE_BATCH) -> tuple[int, int]:
        events = await self._in_batches(queries.PURGE_EVENTS, before, batch)
        messages = await self._in_batches(queries.STUB_MESSAGES, before, batch)
        return events, messages

    async def _in_batches(self, statement: str, before: float, batch: int) -> int:
        done = 0
        while True:

            async def work(connection: Connection) -> int | None:
                return row_count(await connection.execute(statement, before, batch))

            count = await self._db.once("retention", work, None)
            if count is None:
                return done  # another process is applying retention
            done += count
            if count < batch:
                return done
