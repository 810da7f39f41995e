"""The PostgreSQL log's writer: the group commit (pixelpost.store.groupcommit) on a
pooled connection. A batch is a few statements, each one round trip however many rows:
columns go in as arrays, and opens and clicks become events inside PostgreSQL. The
commit returns once PostgreSQL has flushed it (synchronous_commit, as it comes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pixelpost.store.groupcommit import COMMIT_INTERVAL, GroupCommit, Row, Rows
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Database

NOTIFY_INTERVAL = 0.05
"""Seconds between two notices of new events from one process (idle dispatchers wake
on the first; busy ones route what has come meanwhile)."""


def columns(rows: Sequence[Row], width: int) -> list[list[object]]:
    """Rows as one list per column, as `unnest` reads them."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def latest_suppressions(rows: Sequence[Row]) -> list[Row]:
    """One row per (address, scope), the last one given: PostgreSQL refuses to change
    a row twice in one statement."""
    return list({(row[0], row[4] or ""): (*row[:4], row[4] or "") for row in rows}.values())


class PostgreSQLGroupCommit(GroupCommit):
    """Appends messages and events to the log, in batches."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        interval: float = COMMIT_INTERVAL,
    ) -> None:
        super().__init__(interval=interval)
        self._db = db
        self._clock = clock
        self._notified = 0.0

    async def _commit(self, rows: Rows) -> None:
        shard = self._db.shard
        notify = bool(rows.events or rows.hits) and (
            self._clock() - self._notified >= NOTIFY_INTERVAL
        )
        async with self._db.connection() as connection, connection.transaction():
            if rows.messages:
                await connection.execute(queries.INSERT_MESSAGES, *columns(rows.messages, 4))
            if rows.events:
                await connection.execute(queries.INSERT_EVENTS, *columns(rows.events, 5), shard)
            if rows.hits:
                await connection.execute(queries.INSERT_HITS, *columns(rows.hits, 10), shard)
            if rows.suppressions:
                latest = latest_suppressions(rows.suppressions)
                await connection.execute(queries.SUPPRESS, *columns(latest, 5))
            if notify:
                await connection.execute(queries.NOTIFY, queries.EVENTS_CHANNEL, "")
        if notify:
            self._notified = self._clock()

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        await self._drain()
