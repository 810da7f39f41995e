"""The Outbox role on SQLite: routing new events to their destinations, claims with a
lease, outcomes, dead letters and replay. All of it runs on the background connection,
in the outbox file with the log attached (read only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiosqlite

from pixelpost.core.events import dumps, render
from pixelpost.store.base import Claimed, DeadLetter, DestinationCounts, Route
from pixelpost.store.rows import dead_letter, event_type
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database
from pixelpost.store.sqlite.writer import TYPE_NAMES

ROUTE_BATCH = 500


async def _one(connection: aiosqlite.Connection, sql: str) -> int:
    async with connection.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _disabled(connection: aiosqlite.Connection) -> dict[str, str]:
    async with connection.execute(queries.DISABLED) as cursor:
        return dict(await cursor.fetchall())  # type: ignore[arg-type]


async def _route(connection: aiosqlite.Connection, table: str, *, now: float, limit: int) -> int:
    """Route up to `limit` events past the cursor by the routing table `table` (JSON)."""
    routed = await _one(connection, queries.LOCK_ROUTED)
    newest = await _one(connection, queries.NEWEST_EVENT)
    if newest <= routed:
        return 0
    upto = min(newest, routed + limit)
    await connection.execute(queries.ROUTE, (now, now, table, routed, upto))
    if await _disabled(connection):  # what went straight to dead letters counts
        async with connection.execute(queries.ROUTED_DEAD, (routed, upto)) as cursor:
            for destination, dead in await cursor.fetchall():
                await connection.execute(queries.COUNT_DEAD, (destination, dead))
    await connection.execute(queries.SET_ROUTED, (upto,))
    return upto - routed


class SQLiteOutbox:
    """Deliveries of events to destinations (`pixelpost.store.Outbox`)."""

    _db: Database

    async def route(self, routes: Sequence[Route], *, limit: int = ROUTE_BATCH) -> int:
        async with self._db.lock, self._db.background.execute(queries.ROUTING_BEHIND) as cursor:
            row = await cursor.fetchone()
        if not row or not row[0]:
            return 0  # nothing new: no write transaction at all
        now = self._db.clock()
        table = dumps([[r.config_set, TYPE_NAMES[r.event_type], r.destination] for r in routes])

        async def work(connection: aiosqlite.Connection) -> int:
            return await _route(connection, table, now=now, limit=limit)

        return await self._db.transaction(work)

    async def claim(self, destination: str, *, limit: int, lease: float) -> list[Claimed]:
        now = self._db.clock()

        async def work(connection: aiosqlite.Connection) -> list[Claimed]:
            claim = (now + lease, now, destination, now, limit)
            async with connection.execute(queries.CLAIM, claim) as cursor:
                attempts: dict[int, int] = dict(await cursor.fetchall())  # type: ignore[arg-type]
            if not attempts:
                return []
            seqs = (dumps(list(attempts)),)
            async with connection.execute(queries.CLAIMED_EVENTS, seqs) as cursor:
                rows = await cursor.fetchall()
            return [
                Claimed(
                    seq=seq,
                    event_id=event_id,
                    event_type=event_type(type_name),
                    message_id=message_id,
                    config_set=config_set or "",
                    attempts=attempts[seq],
                    body=render(event_type(type_name), mail, detail, message_id),
                )
                for seq, event_id, type_name, message_id, detail, mail, config_set in rows
            ]

        return await self._db.transaction(work)

    async def delivered(self, destination: str, seqs: Sequence[int]) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            await connection.execute(queries.DELETE_DELIVERED, (destination, dumps(list(seqs))))
            await connection.execute(queries.COUNT_DELIVERED, (destination, len(seqs)))

        await self._db.transaction(work)

    async def retry(
        self, destination: str, seq: int, *, attempts: int, at: float, error: str
    ) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            retry = (attempts, at, error, self._db.clock(), seq, destination)
            await connection.execute(queries.RETRY, retry)
            await connection.execute(queries.COUNT_FAILED, (destination, 1))

        await self._db.transaction(work)

    async def dead(self, destination: str, seq: int, *, attempts: int, error: str) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            dead = (attempts, error, self._db.clock(), seq, destination)
            await connection.execute(queries.DEAD, dead)
            await connection.execute(queries.COUNT_FAILED, (destination, 1))
            await connection.execute(queries.COUNT_DEAD, (destination, 1))

        await self._db.transaction(work)

    async def disable(
        self, destination: str, reason: str, *, seq: int | None = None, attempts: int = 0
    ) -> bool:
        now = self._db.clock()

        async def work(connection: aiosqlite.Connection) -> bool:
            inserted = await connection.execute(queries.DISABLE, (destination, now, reason))
            if seq is not None:  # the delivery that was refused counts its attempt
                await connection.execute(queries.SET_ATTEMPTS, (attempts, seq, destination))
            cursor = await connection.execute(queries.DEAD_PENDING, (reason, now, destination))
            await connection.execute(queries.COUNT_FAILED, (destination, 1))
            await connection.execute(queries.COUNT_DEAD, (destination, cursor.rowcount))
            return inserted.rowcount == 1

        return await self._db.transaction(work)

    async def disabled(self) -> dict[str, str]:
        return await self._db.transaction(_disabled)

    async def dead_letters(
        self, destination: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        async def work(connection: aiosqlite.Connection) -> list[DeadLetter]:
            which = (destination, destination, limit)
            async with connection.execute(queries.DEAD_LETTERS, which) as cursor:
                rows = await cursor.fetchall()
            return [dead_letter(row) for row in rows]

        return await self._db.transaction(work)

    async def replay(self, destination: str | None = None) -> int:
        now = self._db.clock()

        async def work(connection: aiosqlite.Connection) -> int:
            cursor = await connection.execute(queries.REPLAY, (now, now, destination, destination))
            await connection.execute(queries.ENABLE, (destination, destination))
            # An SNS endpoint that unsubscribed is asked to subscribe again.
            await connection.execute(queries.SNS_FORGET, (destination, destination))
            return cursor.rowcount

        return await self._db.transaction(work)

    async def listen(
        self, *, events: Callable[[], None], deliveries: Callable[[str], None]
    ) -> None:
        """SQLite has no notices: the dispatcher polls."""

    async def outbox_depth(self) -> dict[str, int]:
        return {name: c.pending for name, c in (await self.counts()).items() if c.pending}

    async def outbox_oldest(self, destinations: Sequence[str]) -> float | None:
        async def work(connection: aiosqlite.Connection) -> float | None:
            which = (dumps(list(destinations)),)
            async with connection.execute(queries.OLDEST_WAITING, which) as cursor:
                row = await cursor.fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._db.transaction(work)

    async def counts(self) -> dict[str, DestinationCounts]:
        async def work(connection: aiosqlite.Connection) -> dict[str, DestinationCounts]:
            async with connection.execute(queries.DESTINATION_COUNTS) as cursor:
                rows = await cursor.fetchall()
            async with connection.execute(queries.PENDING_BY_DESTINATION) as cursor:
                depth: dict[str, int] = dict(await cursor.fetchall())  # type: ignore[arg-type]
            found = {
                name: DestinationCounts(
                    delivered=delivered, failed=failed, dead=dead, pending=depth.get(name, 0)
                )
                for name, delivered, failed, dead in rows
            }
            for name, pending in depth.items():
                found.setdefault(name, DestinationCounts(pending=pending))
            return found

        return await self._db.transaction(work)
