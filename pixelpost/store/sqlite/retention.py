"""Retention in the SQLite store: what `store.retention_days` deletes, and what it keeps.

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

from dataclasses import dataclass

import aiosqlite

from pixelpost.store.sqlite.schema import rollback

_NO_PENDING = 9223372036854775807


@dataclass(frozen=True, slots=True)
class Snapshot:
    """How far a purge may go."""

    last_event: int
    """The newest event that is routed, counted and delivered, as far as all before it."""
    busy: frozenset[str]
    """Copies with an event still to route or to deliver."""


async def snapshot(connection: aiosqlite.Connection) -> Snapshot:
    """Where routing, counting and delivery are (outside any write transaction)."""
    async with connection.execute(
        "SELECT min((SELECT min(seq) FROM outbox.cursors WHERE name IN ('routed', 'rolled_up')),"
        " coalesce((SELECT min(d.event_seq) - 1 FROM outbox.deliveries AS d"
        "  WHERE d.state = 'pending'"
        "  AND EXISTS (SELECT 1 FROM main.events AS e WHERE e.seq = d.event_seq)), ?))",
        (_NO_PENDING,),
    ) as cursor:
        row = await cursor.fetchone()
    last_event = int(row[0]) if row is not None and row[0] is not None else 0
    async with connection.execute(
        "SELECT e.message_id FROM main.events AS e"
        " WHERE e.seq > (SELECT seq FROM outbox.cursors WHERE name = 'routed')"
        " UNION SELECT e.message_id FROM outbox.deliveries AS d"
        " JOIN main.events AS e ON e.seq = d.event_seq WHERE d.state = 'pending'"
    ) as cursor:
        busy = frozenset(message_id for (message_id,) in await cursor.fetchall())
    return Snapshot(last_event=last_event, busy=busy)


async def make_durable(connection: aiosqlite.Connection) -> None:
    """Sync the outbox's write-ahead log, and with it every commit made so far."""
    await connection.execute("PRAGMA outbox.synchronous = FULL")
    try:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            await connection.execute(
                "INSERT OR IGNORE INTO outbox.cursors (name, seq) VALUES ('stubbed', 0)"
            )
            await connection.execute("UPDATE outbox.cursors SET seq = seq WHERE name = 'stubbed'")
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
    async with connection.execute(
        "SELECT seq, created_at FROM main.events"
        " WHERE seq <= ? AND seq < (SELECT max(seq) FROM main.events) ORDER BY seq LIMIT ?",
        (at.last_event, batch),
    ) as cursor:
        rows = await cursor.fetchall()
    last = None
    for seq, created_at in rows:
        if created_at >= before:
            break  # events are in time order, near enough: the rest wait for a later run
        last = seq
    if last is None:
        return 0
    deleted = await connection.execute("DELETE FROM main.events WHERE seq <= ?", (last,))
    await connection.execute("DELETE FROM outbox.deliveries WHERE event_seq <= ?", (last,))
    return deleted.rowcount


async def stub_messages(
    connection: aiosqlite.Connection, before: float, batch: int, at: Snapshot
) -> int:
    """Cut up to `batch` of the oldest message records from before `before` to stubs."""
    async with connection.execute(
        "SELECT seq FROM outbox.cursors WHERE name = 'stubbed'"
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise AssertionError("outbox.cursors has no 'stubbed' row (make_durable adds it)")
    after = int(row[0])
    async with connection.execute(
        "SELECT rowid, id, created_at FROM main.messages WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, batch),
    ) as cursor:
        rows = await cursor.fetchall()
    last = None
    for rowid, message_id, created_at in rows:
        if created_at >= before or message_id in at.busy:
            break
        last = rowid
    if last is None:
        return 0
    stubbed = await connection.execute(
        "UPDATE main.messages SET mail = json_object('messageId', id)"
        " WHERE rowid > ? AND rowid <= ?",
        (after, last),
    )
    await connection.execute("UPDATE outbox.cursors SET seq = ? WHERE name = 'stubbed'", (last,))
    return stubbed.rowcount
