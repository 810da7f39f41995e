"""The Outbox role on PostgreSQL, for any number of dispatchers on any machines.

Routing takes a batch of new events off the route queue (`FOR UPDATE SKIP LOCKED`: two
dispatchers never take the same event, nor wait for each other) and fans them out to
their destinations in one statement. A claim hides due deliveries for a lease the same
way; a dispatcher that dies holding claims loses nothing, since its lease lapses and
another dispatcher takes them. New events and new deliveries are announced on
`LISTEN` channels (pixelpost.store.postgresql.queries), so idle dispatchers wake at once;
they still poll, in case a notice is missed.
"""

from __future__ import annotations

from collections.abc import Sequence

from pixelpost.core.events import render
from pixelpost.store.base import Claimed, DeadLetter, DestinationCounts, Route
from pixelpost.store.groupcommit import TYPE_NAMES
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Connection, Database, row_count
from pixelpost.store.rows import dead_letter, event_type

ROUTE_BATCH = 500


class PostgreSQLOutbox:
    """Deliveries of events to destinations (`pixelpost.store.Outbox`)."""

    _db: Database

    async def route(self, routes: Sequence[Route], *, limit: int = ROUTE_BATCH) -> int:
        async with self._db.connection() as connection:
            if not await connection.fetchval(queries.ROUTING_BEHIND):
                return 0  # nothing new: no write transaction at all
        now = self._db.clock()
        table = (
            [r.config_set for r in routes],
            [TYPE_NAMES[r.event_type] for r in routes],
            [r.destination for r in routes],
        )

        async def work(connection: Connection) -> int:
            rows = await connection.fetch(queries.ROUTE, limit, now, *table)
            routed = int(rows[0][0])
            for _, destination, pending, dead in rows:
                if destination is None:
                    continue
                if dead:  # to a disabled destination: straight to the dead letters
                    await connection.execute(
                        queries.COUNT_DEAD, destination, self._db.shard, int(dead)
                    )
                if pending:
                    await connection.execute(queries.NOTIFY, queries.OUTBOX_CHANNEL, destination)
            return routed

        return await self._db.transaction(work)

    async def claim(self, destination: str, *, limit: int, lease: float) -> list[Claimed]:
        now = self._db.clock()

        async def work(connection: Connection) -> list[Claimed]:
            rows = await connection.fetch(queries.CLAIM, now + lease, now, destination, now, limit)
            return [
                Claimed(
                    seq=seq,
                    event_id=event_id,
                    event_type=event_type(type_name),
                    message_id=message_id,
                    config_set=config_set or "",
                    attempts=attempts,
                    body=render(event_type(type_name), mail, detail, message_id),
                )
                for (
                    seq,
                    event_id,
                    type_name,
                    message_id,
                    detail,
                    mail,
                    config_set,
                    attempts,
                ) in rows
            ]

        return await self._db.transaction(work)

    async def delivered(self, destination: str, seqs: Sequence[int]) -> None:
        async def work(connection: Connection) -> None:
            await connection.execute(queries.DELETE_DELIVERED, destination, list(seqs))
            await connection.execute(
                queries.COUNT_DELIVERED, destination, self._db.shard, len(seqs)
            )

        await self._db.transaction(work)

    async def retry(
        self, destination: str, seq: int, *, attempts: int, at: float, error: str
    ) -> None:
        async def work(connection: Connection) -> None:
            now = self._db.clock()
            await connection.execute(queries.RETRY, attempts, at, error, now, seq, destination)
            await connection.execute(queries.COUNT_FAILED, destination, self._db.shard, 1)

        await self._db.transaction(work)

    async def dead(self, destination: str, seq: int, *, attempts: int, error: str) -> None:
        async def work(connection: Connection) -> None:
            now = self._db.clock()
            await connection.execute(queries.DEAD, attempts, error, now, seq, destination)
            await connection.execute(queries.COUNT_FAILED, destination, self._db.shard, 1)
            await connection.execute(queries.COUNT_DEAD, destination, self._db.shard, 1)

        await self._db.transaction(work)

    async def disable(
        self, destination: str, reason: str, *, seq: int | None = None, attempts: int = 0
    ) -> bool:
        now = self._db.clock()

        async def work(connection: Connection) -> bool:
            inserted = await connection.execute(queries.DISABLE, destination, now, reason)
            if seq is not None:  # the delivery that was refused counts its attempt
                await connection.execute(queries.SET_ATTEMPTS, attempts, seq, destination)
            status = await connection.execute(queries.DEAD_PENDING, reason, now, destination)
            await connection.execute(queries.COUNT_FAILED, destination, self._db.shard, 1)
            await connection.execute(
                queries.COUNT_DEAD, destination, self._db.shard, row_count(status)
            )
            return row_count(inserted) == 1

        return await self._db.transaction(work)

    async def disabled(self) -> dict[str, str]:
        async with self._db.connection() as connection:
            rows = await connection.fetch(queries.DISABLED)
        return dict(rows)  # type: ignore[arg-type]

    async def dead_letters(
        self, destination: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        async with self._db.connection() as connection:
            rows = await connection.fetch(queries.DEAD_LETTERS, destination, limit)
        return [dead_letter(row) for row in rows]

    async def replay(self, destination: str | None = None) -> int:
        now = self._db.clock()

        async def work(connection: Connection) -> int:
            status = await connection.execute(queries.REPLAY, now, destination)
            await connection.execute(queries.ENABLE, destination)
            # An SNS endpoint that unsubscribed is asked to subscribe again.
            await connection.execute(queries.SNS_FORGET, destination)
            replayed = row_count(status)
            if replayed:
                await connection.execute(queries.NOTIFY, queries.OUTBOX_CHANNEL, destination or "")
            return replayed

        return await self._db.transaction(work)

    async def outbox_depth(self) -> dict[str, int]:
        return {name: c.pending for name, c in (await self.counts()).items() if c.pending}

    async def outbox_oldest(self, destinations: Sequence[str]) -> float | None:
        async with self._db.connection() as connection:
            oldest = await connection.fetchval(queries.OLDEST_WAITING, list(destinations))
        return None if oldest is None else float(oldest)

    async def counts(self) -> dict[str, DestinationCounts]:
        async with (
            self._db.connection() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await connection.fetch(queries.DESTINATION_COUNTS)
            by_destination = await connection.fetch(queries.PENDING_BY_DESTINATION)
        depth = {name: int(n) for name, n in by_destination}
        found = {
            name: DestinationCounts(
                delivered=int(delivered),
                failed=int(failed),
                dead=int(dead),
                pending=depth.get(name, 0),
            )
            for name, delivered, failed, dead in rows
        }
        for name, pending in depth.items():
            found.setdefault(name, DestinationCounts(pending=pending))
        return found
