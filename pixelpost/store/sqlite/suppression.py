"""The SuppressionList role on SQLite: a table of the log file, keyed by address and
scope ('' for the account, else a configuration set's name).

The send path's lookup reads on the event loop's own thread (`Database.inline`), a
statement per `INLINE_CHUNK` recipients with a pause for the loop between them; where
SQLite would have to wait for a lock, it reads on the lookups connection's thread
instead. Changes (rare: a bounce, a complaint, the command line, the API) are
transactions on the background connection that take the log's write lock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence

import aiosqlite

from pixelpost.core.events import Event, dumps
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store.rows import suppressed
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database
from pixelpost.store.sqlite.writer import TYPE_NAMES

INLINE_CHUNK = 500
"""Recipients looked up in one statement on the event loop's thread (about 1 ms)."""


def _event_rows(event: Event) -> str:
    """One event as the log's insert statements read it (see `GroupCommit.write`)."""
    return dumps(
        [
            [
                event.id,
                event.message_id,
                TYPE_NAMES[event.type],
                event.created_at.timestamp(),
                event.detail,
            ]
        ]
    )


class SQLiteSuppressionList:
    """The account's suppression list (`pixelpost.store.SuppressionList`)."""

    _db: Database

    async def suppressed(
        self, addresses: Sequence[str], config_set: str | None = None
    ) -> frozenset[str]:
        scope = config_set or ""
        found: set[str] = set()
        for start in range(0, len(addresses), INLINE_CHUNK):
            if start:
                await asyncio.sleep(0)  # other sessions' turn between chunks
            chunk = json.dumps(addresses[start : start + INLINE_CHUNK])
            try:
                rows = self._db.inline.execute(queries.SUPPRESSED, (chunk, scope)).fetchall()
            except sqlite3.OperationalError:  # busy, or locked: read where waiting is fine
                rows = await self._looked_up(chunk, scope)
            except sqlite3.Error as exc:
                raise self._db.error(exc) from exc
            found.update(address for (address,) in rows)
        return frozenset(found)

    async def _looked_up(self, chunk: str, scope: str) -> list[tuple[str]]:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.SUPPRESSED, (chunk, scope)) as cursor:
                return [(str(row[0]),) for row in await cursor.fetchall()]
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise self._db.error(exc) from exc

    async def suppression(self, address: str, config_set: str | None = None) -> Suppressed | None:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.SUPPRESSION, (address, config_set or "")) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise self._db.error(exc) from exc
        return None if row is None else suppressed(row)

    async def suppress(self, entries: Sequence[Suppressed]) -> int:
        if not entries:
            return 0
        rows = json.dumps(
            [
                [e.address, e.reason.value, e.created_at.timestamp(), e.message_id, e.config_set]
                for e in entries
            ]
        )
        distinct = len({(entry.address, entry.config_set) for entry in entries})

        async def work(connection: aiosqlite.Connection) -> int:
            async with connection.execute(queries.SUPPRESSION_ADDRESSES, (rows,)) as cursor:
                row = await cursor.fetchone()
            await connection.execute(queries.SUPPRESS, (rows,))
            return distinct - (int(row[0]) if row is not None else 0)

        return await self._db.transaction(work, immediate=True)

    async def unsuppress(self, address: str, config_set: str | None = None) -> bool:
        async def work(connection: aiosqlite.Connection) -> bool:
            cursor = await connection.execute(queries.UNSUPPRESS, (address, config_set or ""))
            return cursor.rowcount > 0

        return await self._db.transaction(work, immediate=True)

    async def unsubscribe(self, entry: Suppressed, event: Event) -> bool:
        async def work(connection: aiosqlite.Connection) -> bool:
            cursor = await connection.execute(
                queries.UNSUBSCRIBE,
                (
                    entry.address,
                    entry.config_set or "",
                    entry.created_at.timestamp(),
                    entry.message_id,
                ),
            )
            if cursor.rowcount == 0:
                return False  # on the list in that scope already: nothing changes
            await self._record_event(connection, event)
            return True

        return await self._db.transaction(work, immediate=True)

    async def resubscribe(self, address: str, config_set: str | None, event: Event) -> bool:
        async def work(connection: aiosqlite.Connection) -> bool:
            cursor = await connection.execute(queries.RESUBSCRIBE, (address, config_set or ""))
            if cursor.rowcount == 0:
                return False  # not unsubscribed (or on the list for another reason)
            await self._record_event(connection, event)
            return True

        return await self._db.transaction(work, immediate=True)

    @staticmethod
    async def _record_event(connection: aiosqlite.Connection, event: Event) -> None:
        rows = _event_rows(event)
        await connection.execute(queries.INSERT_EVENTS, (rows,))
        await connection.execute(queries.COUNT_EVENTS, (rows,))

    async def suppression_list(
        self,
        *,
        after: str = "",
        limit: int = 1000,
        reason: Reason | None = None,
        config_set: str | None = None,
    ) -> list[Suppressed]:
        reader = self._db.reader
        try:
            async with reader.execute(
                queries.SUPPRESSION_PAGE, (config_set or "", after, reason, reason, limit)
            ) as cursor:
                return [suppressed(row) for row in await cursor.fetchall()]
        except (sqlite3.Error, ValueError) as exc:
            raise self._db.error(exc) from exc
