"""The SuppressionList role on PostgreSQL: one table keyed by address and scope ('' for
the account, else a configuration set's name), shared by every relay and tracker."""

from __future__ import annotations

from collections.abc import Sequence

from pixelpost.core.events import Event
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store.groupcommit import TYPE_NAMES
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Connection, Database, row_count
from pixelpost.store.postgresql.writer import columns, latest_suppressions
from pixelpost.store.rows import suppressed


class PostgreSQLSuppressionList:
    """The account's suppression list (`pixelpost.store.SuppressionList`)."""

    _db: Database

    async def suppressed(
        self, addresses: Sequence[str], config_set: str | None = None
    ) -> frozenset[str]:
        if not addresses:
            return frozenset()
        async with self._db.connection() as connection:
            rows = await connection.fetch(queries.SUPPRESSED, list(addresses), config_set or "")
        return frozenset(address for (address,) in rows)

    async def suppression(self, address: str, config_set: str | None = None) -> Suppressed | None:
        async with self._db.connection() as connection:
            row = await connection.fetchrow(queries.SUPPRESSION, address, config_set or "")
        return None if row is None else suppressed(row)

    async def suppress(self, entries: Sequence[Suppressed]) -> int:
        if not entries:
            return 0
        rows = latest_suppressions(
            [
                (e.address, e.reason.value, e.created_at.timestamp(), e.message_id, e.config_set)
                for e in entries
            ]
        )

        async def work(connection: Connection) -> int:
            inserted = await connection.fetch(queries.SUPPRESS, *columns(rows, 5))
            return sum(1 for (new,) in inserted if new)

        return await self._db.transaction(work)

    async def unsuppress(self, address: str, config_set: str | None = None) -> bool:
        async def work(connection: Connection) -> bool:
            status = await connection.execute(queries.UNSUPPRESS, address, config_set or "")
            return row_count(status) > 0

        return await self._db.transaction(work)

    async def unsubscribe(self, entry: Suppressed, event: Event) -> bool:
        async def work(connection: Connection) -> bool:
            status = await connection.execute(
                queries.UNSUBSCRIBE,
                entry.address,
                entry.config_set or "",
                entry.created_at.timestamp(),
                entry.message_id,
            )
            if row_count(status) == 0:
                return False  # on the list in that scope already: nothing changes
            await self._record_event(connection, event)
            return True

        return await self._db.transaction(work)

    async def resubscribe(self, address: str, config_set: str | None, event: Event) -> bool:
        async def work(connection: Connection) -> bool:
            status = await connection.execute(queries.RESUBSCRIBE, address, config_set or "")
            if row_count(status) == 0:
                return False  # not unsubscribed (or on the list for another reason)
            await self._record_event(connection, event)
            return True

        return await self._db.transaction(work)

    async def _record_event(self, connection: Connection, event: Event) -> None:
        row = (
            event.id,
            event.message_id,
            TYPE_NAMES[event.type],
            event.created_at.timestamp(),
            event.detail,
        )
        await connection.execute(queries.INSERT_EVENTS, *columns([row], 5), self._db.shard)
        await connection.execute(queries.NOTIFY, queries.EVENTS_CHANNEL, "")

    async def suppression_list(
        self,
        *,
        after: str = "",
        limit: int = 1000,
        reason: Reason | None = None,
        config_set: str | None = None,
    ) -> list[Suppressed]:
        async with self._db.connection() as connection:
            rows = await connection.fetch(
                queries.SUPPRESSION_PAGE,
                config_set or "",
                after,
                None if reason is None else reason.value,
                limit,
            )
        return [suppressed(row) for row in rows]
