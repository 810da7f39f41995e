"""The MessageLog role on SQLite: copies and events go in through the group commit;
lookups have a connection of their own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

import aiosqlite

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event
from pixelpost.core.suppression import Suppressed
from pixelpost.store.base import Hit, MessageRecord
from pixelpost.store.rows import event_type
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database


class SQLiteMessageLog:
    """Copies of messages and the events about them (`pixelpost.store.MessageLog`)."""

    _db: Database

    async def record(
        self,
        *,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> None:
        if messages or events or suppressions:
            await self._db.writer.write(messages, events, suppressions=suppressions)

    def record_hits(self, hits: Sequence[Hit]) -> asyncio.Future[None]:
        return self._db.writer.write(hits=hits)

    async def message(self, message_id: str) -> MessageRecord | None:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.MESSAGE, (message_id,)) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise self._db.error(exc) from exc
        if row is None:
            return None
        return MessageRecord(
            id=row[0],
            config_set=row[1],
            created_at=datetime.fromtimestamp(float(row[2]), UTC),
            mail=row[3],
        )

    async def event_counts(self) -> dict[EventType, int]:
        async def work(connection: aiosqlite.Connection) -> dict[EventType, int]:
            async with connection.execute(queries.EVENT_COUNTS) as cursor:
                return {event_type(name): value for name, value in await cursor.fetchall()}

        return await self._db.transaction(work)

    async def delivered_at(self, message_id: str) -> tuple[float, bool] | None:
        lookups = self._db.lookups
        try:
            async with lookups.execute(queries.DELIVERED_AT, (message_id,)) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise self._db.error(exc) from exc
        return (float(row[0]), bool(row[1])) if row is not None else None
