"""Retention in the SQLite store: what `store.retention_days` deletes, and what it keeps.

Events older than the retention go once they are routed and counted and have no
delivery left to make (their dead letters go with them). The newest event always
stays: SQLite would give its number to the next one, behind the cursors of routing and
counting. A copy's record is cut to a stub: its id, configuration set, tags and times
stay, so that an open or click that comes later is still published (with a `mail`
object of only its `messageId`, as SES consumers get for a copy nothing is known of)
and counted, and counted once; its SES mail object, with the addresses and headers,
goes. A record waits while any event of its copy is not routed or not delivered yet.

Each function does one batch in the caller's transaction, which must hold the write
locks from its start (BEGIN IMMEDIATE): the batch reads the log and then writes it.
"""

from __future__ import annotations

import aiosqlite

_DELETE_BOUND = (
    "SELECT min((SELECT min(seq) FROM outbox.cursors WHERE name IN ('routed', 'rolled_up')),"
    " (SELECT coalesce(max(seq), 0) - 1 FROM main.events),"
    " coalesce((SELECT min(event_seq) - 1 FROM outbox.deliveries WHERE state = 'pending'),"
    "  9223372036854775807))"
)


async def delete_events(connection: aiosqlite.Connection, before: float, batch: int) -> int:
    """Delete up to `batch` of the oldest events from before `before` (a Unix time)."""
    async with connection.execute(_DELETE_BOUND) as cursor:
        row = await cursor.fetchone()
    bound = int(row[0]) if row is not None and row[0] is not None else 0
    async with connection.execute(
        "SELECT seq, created_at FROM main.events WHERE seq <= ? ORDER BY seq LIMIT ?",
        (bound, batch),
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


async def stub_messages(connection: aiosqlite.Connection, before: float, batch: int) -> int:
    """Cut up to `batch` of the oldest message records from before `before` to stubs."""
    async with connection.execute(
        "SELECT seq FROM outbox.cursors WHERE name = 'stubbed'"
    ) as cursor:
        row = await cursor.fetchone()
    after = int(row[0]) if row is not None else 0
    # Copies with an event still to route or to deliver keep their record for now.
    async with connection.execute(
        "SELECT e.message_id FROM main.events AS e"
        " WHERE e.seq > (SELECT seq FROM outbox.cursors WHERE name = 'routed')"
        " UNION SELECT e.message_id FROM outbox.deliveries AS d"
        " JOIN main.events AS e ON e.seq = d.event_seq WHERE d.state = 'pending'"
    ) as cursor:
        busy = {message_id for (message_id,) in await cursor.fetchall()}
    async with connection.execute(
        "SELECT rowid, id, created_at FROM main.messages WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, batch),
    ) as cursor:
        rows = await cursor.fetchall()
    last = None
    for rowid, message_id, created_at in rows:
        if created_at >= before or message_id in busy:
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
