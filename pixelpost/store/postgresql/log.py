"""The MessageLog role on PostgreSQL: copies and events go in through the group commit;
lookups take a pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event
from pixelpost.core.suppression import Suppressed
from pixelpost.store.base import Hit, MessageRecord
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Database
from pixelpost.store.postgresql.writer import PostgreSQLGroupCommit
from pixelpost.store.rows import event_type


class PostgreSQLMessageLog:
    """Copies of messages and the events about them (`pixelpost.store.MessageLog`)."""

    _db: Database
    _writer: PostgreSQLGroupCommit

    async def record(
        self,
        *,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> None:
        if messages or events or suppressions:
            await self._writer.write(messages, events, suppressions=suppressions)

    def record_hits(self, hits: Sequence[Hit]) -> asyncio.Future[None]:
        return self._writer.write(hits=hits)

    async def message(self, message_id: str) -> MessageRecord | None:
        async with self._db.connection() as connection:
            row = await connection.fetchrow(queries.MESSAGE, message_id)
        if row is None:
            return None
        return MessageRecord(
            id=row[0],
            config_set=row[1],
            created_at=datetime.fromtimestamp(float(row[2]), UTC),
            mail=row[3],
        )

    async def event_counts(self) -> dict[EventType, int]:
        async with self._db.connection() as connection:
            rows = await connection.fetch(queries.EVENT_COUNTS)
        return {event_type(name): int(value) for name, value in rows}

    async def delivered_at(self, message_id: str) -> tuple[float, bool] | None:
        async with self._db.connection() as connection:
            row = await connection.fetchrow(queries.DELIVERED_AT, message_id)
        return (float(row[0]), bool(row[1])) if row is not None else None
