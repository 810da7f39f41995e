"""The Retention role on SQLite: what `store.retention_days` deletes, and what it keeps.

Events older than the retention go once they are routed and counted and have no
delivery left to make (their dead letters go with them). The newest event always
stays: SQLite would give its number to the next one, behind the cursors of routing and
counting. A copy's record is cut to a stub: its id, configuration set, tags and times
stay, so that an open or click that comes later is still published (with a `mail`
object of only its `messageId`) and counted, and counted once; its SES mail object,
with the addresses and headers, goes. A record waits while any event of its copy is not
routed or not delivered yet.

A purge first takes a `snapshot` of how far routing, counting and delivery are, then
makes the outbox durable up to there (the outbox is not synced at each commit, and a
power loss must not undo the counting of events whose deletion stays). Batches then
delete no further than the snapshot, each in a short transaction that holds the write
locks from its start (BEGIN IMMEDIATE: a batch reads the log, then writes it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.database import Database
from pixelpost.store.sqlite.schema import rollback

PURGE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """How far a purge may go."""

    last_event: int
    """The newest event that is routed, counted and delivered, as far as all before it."""
    busy: frozenset[str]
    """Copies with an event still to route or to deliver."""


async def snapshot(connection: aiosqlite.Connection) -> Snapshot:
    """Where routing, counting and delivery are (outside any write transaction)."""
    async with connection.execute(queries.SNAPSHOT_LAST_EVENT, (queries.NO_PENDING,)) as cursor:
        row = await cursor.fetchone()
    last_event = int(row[0]) if row is not None and row[0] is not None else 0
    async with connection.execute(queries.SNAPSHOT_BUSY) as cursor:
        busy = frozenset(message_id for (message_id,) in await cursor.fetchall())
    return Snapshot(last_event=last_event, busy=busy)


async def make_durable(connection: aiosqlite.Connection) -> None:
    """Sync the outbox's write-ahead log, and with it every commit made so far."""
    await connection.execute("PRAGMA outbox.synchronous = FULL")
    try:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            await connection.execute(queries.ADD_STUBBED)
            await connection.execute(queries.TOUCH_STUBBED)
            await connection.execute("COMMIT")
        except BaseException:
            await rollback(connection)  # the level can only be set outside a transaction
            raise
    finally:
        await connection.execute("PRAGMA outbox.synchronous = NORMAL")


async def delete_events(
    connection: aiosqlite.Connection, before: float, batch: int, at: Snapshot
) -> int:
    """Delete up to `batch` of the oldest events from before `before` (a Unix time)."""
    async with connection.execute(queries.OLDEST_EVENTS, (at.last_event, batch)) as cursor:
        rows = await cursor.fetchall()
    last = None
    for seq, created_at in rows:
        if created_at >= before:
            break  # events are in time order, near enough: the rest wait for a later run
        last = seq
    if last is None:
        return 0
    deleted = await connection.execute(queries.DELETE_EVENTS, (last,))
    await connection.execute(queries.DELETE_THEIR_DELIVERIES, (last,))
    return deleted.rowcount


async def stub_messages(
    connection: aiosqlite.Connection, before: float, batch: int, at: Snapshot
) -> int:
    """Cut up to `batch` of the oldest message records from before `before` to stubs."""
    async with connection.execute(queries.STUBBED) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise AssertionError("outbox.cursors has no 'stubbed' row (make_durable adds it)")
    after = int(row[0])
    async with connection.execute(queries.OLDEST_MESSAGES, (after, batch)) as cursor:
        rows = await cursor.fetchall()
    last = None
    for rowid, message_id, created_at in rows:
        if created_at >= before or message_id in at.busy:
            break
        last = rowid
    if last is None:
        return 0
    stubbed = await connection.execute(queries.STUB_MESSAGES, (after, last))
    await connection.execute(queries.SET_STUBBED, (last,))
    return stubbed.rowcount


Step = Callable[[aiosqlite.Connection, float, int, Snapshot], Awaitable[int]]


class SQLiteRetention:
    """`store.retention_days`, applied (`pixelpost.store.Retention`)."""

    _db: Database

    async def purge(self, before: float, *, batch: int = PURGE_BATCH) -> tuple[int, int]:
        at = await self._db.shielded(self._snapshot)
        events = await self._in_batches(delete_events, before, batch, at)
        messages = await self._in_batches(stub_messages, before, batch, at)
        return events, messages

    async def _snapshot(self) -> Snapshot:
        """A snapshot, made durable: it bounds every batch of the purge."""
        async with self._db.lock:
            try:
                at = await snapshot(self._db.background)
                await make_durable(self._db.background)
            except sqlite3.Error as exc:
                await rollback(self._db.background)
                raise self._db.error(exc, "retention: ") from exc
            return at

    async def _in_batches(self, step: Step, before: float, batch: int, at: Snapshot) -> int:
        done = 0
        while True:

            async def work(connection: aiosqlite.Connection) -> int:
                return await step(connection, before, batch, at)

            count = await self._db.transaction(work, immediate=True)
            done += count
            if count < batch:
                return done
