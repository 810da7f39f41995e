"""The SuppressionList role on SQLite: a table of the log file, keyed by address.

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
from datetime import UTC, datetime

import aiosqlite

from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database

INLINE_CHUNK = 500
"""Recipients looked up in one statement on the event loop's thread (about 1 ms)."""


def _entry(row: sqlite3.Row | tuple[object, ...]) -> Suppressed:
    address, reason, created_at, message_id = row
    return Suppressed(
        address=str(address),
        reason=Reason(str(reason)),
        created_at=datetime.fromtimestamp(float(str(created_at)), UTC),
        message_id=None if message_id is None else str(message_id),
    )


class SQLiteSuppressionList:
    """The account's suppression list (`pixelpost.store.SuppressionList`)."""

    _db: Database

    async def suppressed(self, addresses: Sequence[str]) -> frozenset[str]:
        found: set[str] = set()
        for start in range(0, len(addresses), INLINE_CHUNK):
            if start:
                await asyncio.sleep(0)  # other sessions' turn between chunks
            chunk = json.dumps(addresses[start : start + INLINE_CHUNK])
            try:
                rows = self._db.inline.execute(queries.SUPPRESSED, (chunk,)).fetchall()
            except sqlite3.OperationalError:  # busy, or locked: read where waiting is fine
                rows = await self._looked_up(chunk)
            except sqlite3.Error as exc:
                raise self._db.error(exc) from exc
            found.update(address for (address,) in rows)
        return frozenset(found)

    async def _looked_up(self, chunk: str) -> list[tuple[str]]:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.SUPPRESSED, (chunk,)) as cursor:
                return [(str(row[0]),) for row in await cursor.fetchall()]
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise self._db.error(exc) from exc

    async def suppression(self, address: str) -> Suppressed | None:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.SUPPRESSION, (address,)) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise self._db.error(exc) from exc
        return None if row is None else _entry(row)

    async def suppress(self, entries: Sequence[Suppressed]) -> int:
        if not entries:
            return 0
        rows = json.dumps(
            [[e.address, e.reason.value, e.created_at.timestamp(), e.message_id] for e in entries]
        )
        distinct = len({entry.address for entry in entries})

        async def work(connection: aiosqlite.Connection) -> int:
            async with connection.execute(queries.SUPPRESSION_ADDRESSES, (rows,)) as cursor:
                row = await cursor.fetchone()
            await connection.execute(queries.SUPPRESS, (rows,))
            return distinct - (int(row[0]) if row is not None else 0)

        return await self._db.transaction(work, immediate=True)

    async def unsuppress(self, address: str) -> bool:
        async def work(connection: aiosqlite.Connection) -> bool:
            cursor = await connection.execute(queries.UNSUPPRESS, (address,))
            return cursor.rowcount > 0

        return await self._db.transaction(work, immediate=True)

    async def suppression_list(
        self, *, after: str = "", limit: int = 1000, reason: Reason | None = None
    ) -> list[Suppressed]:
        reader = self._db.reader
        try:
            async with reader.execute(
                queries.SUPPRESSION_PAGE, (after, reason, reason, limit)
            ) as cursor:
                return [_entry(row) for row in await cursor.fetchall()]
        except (sqlite3.Error, ValueError) as exc:
            raise self._db.error(exc) from exc
