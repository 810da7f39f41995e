"""`SQLiteStore`: the log written through the group commit, the outbox through a second
connection that reads the log and writes only the outbox file."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, dumps, render
from pixelpost.core.stats import StatsQuery, StatsTable
from pixelpost.store.base import (
    Claimed,
    DeadLetter,
    DestinationCounts,
    Hit,
    MessageRecord,
    Route,
    StoreError,
)
from pixelpost.store.sqlite import retention, statistics
from pixelpost.store.sqlite.schema import BUSY_TIMEOUT_MS, connect, migrate, rollback
from pixelpost.store.sqlite.writer import TYPE_NAMES, GroupCommit

log = logging.getLogger(__name__)

T = TypeVar("T")
Step = Callable[[aiosqlite.Connection, float, int, retention.Snapshot], Awaitable[int]]

CHECKPOINT_INTERVAL = 1.0
ROUTE_BATCH = 500
ROLLUP_BATCH = 5000
PURGE_BATCH = 5000
_BUSY_RETRIES = 20
IMMEDIATE_BUSY_MS = 200


def outbox_path(path: Path) -> Path:
    """The outbox file that goes with the log at `path`."""
    return path.with_name(f"{path.stem}-outbox{path.suffix}")


def _type(name: str) -> EventType:
    return EventType[name.upper()]


def _take_write_lock(path: Path, timeout: float) -> None:
    """Open the log afresh (never creating it: a store whose folder was removed is
    gone, whatever its open connections still read) and take its write lock, waiting
    at most `timeout` seconds for other writers; then let go, having written nothing."""
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None
    )
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()


class SQLiteStore:
    """The store in two SQLite files (see the package's docstring)."""

    def __init__(
        self,
        *,
        path: Path,
        writer: GroupCommit,
        background: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        lookups: aiosqlite.Connection,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self._writer = writer
        self._background = background
        self._reader = reader
        self._lookups = lookups
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False
        self._clock = clock
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="store checkpoints")

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> SQLiteStore:
        """Open (creating and migrating as needed) the store whose log is at `path`."""
        writer = GroupCommit(path)
        background: aiosqlite.Connection | None = None
        reader: aiosqlite.Connection | None = None
        lookups: aiosqlite.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await migrate(path, "log")
            await migrate(outbox_path(path), "outbox")
            await writer.open()
            background = await connect(path, outbox=outbox_path(path))
            # The outbox's state can all be redone: after a power loss its last commits
            # may roll back, and events are routed or delivered once more (at least
            # once, as promised). Not syncing them spares an fsync per claim.
            await background.execute("PRAGMA outbox.synchronous = NORMAL")
            await background.execute("PRAGMA temp_store = MEMORY")
            # Reads that must not queue behind the dispatcher's work have connections
            # of their own: statistics, and the tracker's delivery-time lookups (which
            # must not queue behind statistics either).
            reader = await connect(path, outbox=outbox_path(path))
            lookups = await connect(path)
        except BaseException as exc:
            await writer.close()
            for connection in (background, reader, lookups):
                if connection is not None:
                    await connection.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            raise
        return cls(
            path=path,
            writer=writer,
            background=background,
            reader=reader,
            lookups=lookups,
            clock=clock,
        )

    async def record(
        self, *, messages: Sequence[MessageRecord] = (), events: Sequence[Event] = ()
    ) -> None:
        if messages or events:
            await self._writer.write(messages, events)

    def record_hits(self, hits: Sequence[Hit]) -> asyncio.Future[None]:
        return self._writer.write(hits=hits)

    async def _transaction(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, immediate: bool = False
    ) -> T:
        """Run `work` in a transaction on the background connection, shielded from
        cancellation: a cancelled caller leaves it to finish, so the connection is never
        left halfway through a transaction. `immediate` takes the write locks of both
        files at the start (waiting for other writers), for work that writes the log."""
        return await self._shielded(
            functools.partial(self._run_transaction, work, immediate=immediate)
        )

    async def _shielded(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`work()` on the background connection, run to its end even when the caller is
        cancelled (the caller still sees its cancellation)."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        task = asyncio.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _run_transaction(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, immediate: bool
    ) -> T:
        # A deferred BEGIN: the transaction locks only the file it writes (the outbox),
        # never the log. When another process wrote the outbox between this one's read
        # and write, SQLite says busy at once; the transaction is then run again.
        async with self._lock:
            connection = self._background
            for attempt in range(_BUSY_RETRIES):
                try:
                    if immediate:
                        # The log's write lock is taken first and held while waiting for
                        # the outbox's: wait briefly, then let go and try again, so that
                        # the tracker's commits never wait long behind this.
                        await connection.execute(f"PRAGMA busy_timeout = {IMMEDIATE_BUSY_MS}")
                        try:
                            await connection.execute("BEGIN IMMEDIATE")
                        finally:
                            await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                    else:
                        await connection.execute("BEGIN")
                    try:
                        result = await work(connection)
                        await connection.execute("COMMIT")
                    except BaseException:
                        # A COMMIT refused (busy) leaves the transaction open too.
                        await rollback(connection)
                        raise
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise StoreError(f"store {self.path}: {exc}") from exc
                    if attempt == _BUSY_RETRIES - 1:
                        raise StoreError(f"store {self.path}: {exc}") from exc
                    await asyncio.sleep(0.01 * (attempt + 1))
                except sqlite3.Error as exc:
                    raise StoreError(f"store {self.path}: {exc}") from exc
                else:
                    return result
            raise AssertionError("unreachable")

    async def route(self, routes: Sequence[Route], *, limit: int = ROUTE_BATCH) -> int:
        async with (
            self._lock,
            self._background.execute(
                "SELECT seq < (SELECT coalesce(max(seq), 0) FROM main.events) FROM outbox.cursors"
                " WHERE name = 'routed'"
            ) as cursor,
        ):
            row = await cursor.fetchone()
        if not row or not row[0]:
            return 0  # nothing new: no write transaction at all
        now = self._clock()
        table = dumps([[r.config_set, TYPE_NAMES[r.event_type], r.destination] for r in routes])

        async def work(connection: aiosqlite.Connection) -> int:
            # The cursor is written first, so that the outbox is locked before the log is read.
            async with connection.execute(
                "UPDATE outbox.cursors SET seq = seq WHERE name = 'routed' RETURNING seq"
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            routed = int(row[0])
            async with connection.execute(
                "SELECT coalesce(max(seq), 0) FROM main.events"
            ) as cursor:
                newest_row = await cursor.fetchone()
            newest = int(newest_row[0]) if newest_row else 0
            if newest <= routed:
                return 0
            upto = min(newest, routed + limit)
            # The routing table joins in as JSON: fanning a batch of events out to their
            # destinations is one statement, run by SQLite.
            await connection.execute(
                "INSERT OR IGNORE INTO outbox.deliveries"
                " (event_seq, destination, state, next_attempt_at, last_error, updated_at)"
                " SELECT e.seq, r.value ->> 2, iif(d.name IS NULL, 'pending', 'dead'), ?,"
                "  d.reason, ?"
                " FROM main.events e JOIN main.messages m ON m.id = e.message_id"
                " JOIN json_each(?) r ON r.value ->> 0 = m.config_set AND r.value ->> 1 = e.type"
                " LEFT JOIN outbox.disabled_destinations d ON d.name = r.value ->> 2"
                " WHERE e.seq > ? AND e.seq <= ?",
                (now, now, table, routed, upto),
            )
            if await self._disabled(connection):  # what went straight to dead letters counts
                async with connection.execute(
                    "SELECT destination, count(*) FROM outbox.deliveries"
                    " WHERE event_seq > ? AND event_seq <= ? AND state = 'dead'"
                    " GROUP BY destination",
                    (routed, upto),
                ) as cursor:
                    for destination, dead in await cursor.fetchall():
                        await self._count(connection, destination, "dead", dead)
            await connection.execute(
                "UPDATE outbox.cursors SET seq = ? WHERE name = 'routed'", (upto,)
            )
            return upto - routed

        return await self._transaction(work)

    async def claim(self, destination: str, *, limit: int, lease: float) -> list[Claimed]:
        now = self._clock()

        async def work(connection: aiosqlite.Connection) -> list[Claimed]:
            async with connection.execute(
                "UPDATE outbox.deliveries SET next_attempt_at = ?, updated_at = ?"
                " WHERE rowid IN (SELECT rowid FROM outbox.deliveries"
                "  WHERE destination = ? AND state = 'pending' AND next_attempt_at <= ?"
                "  ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING event_seq, attempts",
                (now + lease, now, destination, now, limit),
            ) as cursor:
                attempts: dict[int, int] = dict(await cursor.fetchall())  # type: ignore[arg-type]
            if not attempts:
                return []
            async with connection.execute(
                "SELECT e.seq, e.id, e.type, e.message_id, e.detail, m.mail FROM main.events e"
                " LEFT JOIN main.messages m ON m.id = e.message_id"
                " WHERE e.seq IN (SELECT value FROM json_each(?)) ORDER BY e.seq",
                (dumps(list(attempts)),),
            ) as cursor:
                rows = await cursor.fetchall()
            return [
                Claimed(
                    seq=seq,
                    event_id=event_id,
                    event_type=_type(type_name),
                    message_id=message_id,
                    attempts=attempts[seq],
                    body=render(_type(type_name), mail, detail, message_id),
                )
                for seq, event_id, type_name, message_id, detail, mail in rows
            ]

        return await self._transaction(work)

    @staticmethod
    async def _count(
        connection: aiosqlite.Connection, destination: str, column: str, amount: int
    ) -> None:
        assert column in ("delivered", "failed", "dead")
        await connection.execute(
            f"INSERT INTO outbox.destination_counts (name, {column}) VALUES (?, ?)"  # noqa: S608 (a fixed column)
            f" ON CONFLICT (name) DO UPDATE SET {column} = {column} + excluded.{column}",
            (destination, amount),
        )

    async def delivered(self, destination: str, seqs: Sequence[int]) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            await connection.execute(
                "DELETE FROM outbox.deliveries WHERE destination = ?"
                " AND event_seq IN (SELECT value FROM json_each(?))",
                (destination, dumps(list(seqs))),
            )
            await self._count(connection, destination, "delivered", len(seqs))

        await self._transaction(work)

    async def retry(
        self, destination: str, seq: int, *, attempts: int, at: float, error: str
    ) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            await connection.execute(
                "UPDATE outbox.deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?,"
                " updated_at = ? WHERE event_seq = ? AND destination = ?",
                (attempts, at, error, self._clock(), seq, destination),
            )
            await self._count(connection, destination, "failed", 1)

        await self._transaction(work)

    async def dead(self, destination: str, seq: int, *, attempts: int, error: str) -> None:
        async def work(connection: aiosqlite.Connection) -> None:
            await connection.execute(
                "UPDATE outbox.deliveries SET state = 'dead', attempts = ?, last_error = ?,"
                " updated_at = ? WHERE event_seq = ? AND destination = ?",
                (attempts, error, self._clock(), seq, destination),
            )
            await self._count(connection, destination, "failed", 1)
            await self._count(connection, destination, "dead", 1)

        await self._transaction(work)

    async def disable(
        self, destination: str, reason: str, *, seq: int | None = None, attempts: int = 0
    ) -> bool:
        now = self._clock()

        async def work(connection: aiosqlite.Connection) -> bool:
            inserted = await connection.execute(
                "INSERT OR IGNORE INTO outbox.disabled_destinations (name, disabled_at, reason)"
                " VALUES (?, ?, ?)",
                (destination, now, reason),
            )
            if seq is not None:  # the delivery that was refused counts its attempt
                await connection.execute(
                    "UPDATE outbox.deliveries SET attempts = ?"
                    " WHERE event_seq = ? AND destination = ?",
                    (attempts, seq, destination),
                )
            cursor = await connection.execute(
                "UPDATE outbox.deliveries SET state = 'dead', last_error = ?, updated_at = ?"
                " WHERE destination = ? AND state = 'pending'",
                (reason, now, destination),
            )
            await self._count(connection, destination, "failed", 1)
            await self._count(connection, destination, "dead", cursor.rowcount)
            return inserted.rowcount == 1

        return await self._transaction(work)

    @staticmethod
    async def _disabled(connection: aiosqlite.Connection) -> dict[str, str]:
        async with connection.execute(
            "SELECT name, reason FROM outbox.disabled_destinations"
        ) as cursor:
            return dict(await cursor.fetchall())  # type: ignore[arg-type]

    async def disabled(self) -> dict[str, str]:
        return await self._transaction(self._disabled)

    async def dead_letters(
        self, destination: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        async def work(connection: aiosqlite.Connection) -> list[DeadLetter]:
            async with connection.execute(
                "SELECT e.id, d.destination, e.type, e.message_id, d.attempts, d.last_error,"
                " d.updated_at FROM outbox.deliveries d JOIN main.events e ON e.seq = d.event_seq"
                " WHERE d.state = 'dead' AND (? IS NULL OR d.destination = ?)"
                " ORDER BY d.updated_at, e.seq LIMIT ?",
                (destination, destination, limit),
            ) as cursor:
                rows = await cursor.fetchall()
            return [
                DeadLetter(
                    event_id=event_id,
                    destination=name,
                    event_type=_type(type_name),
                    message_id=message_id,
                    attempts=attempts,
                    last_error=error or "",
                    failed_at=datetime.fromtimestamp(updated_at, UTC),
                )
                for event_id, name, type_name, message_id, attempts, error, updated_at in rows
            ]

        return await self._transaction(work)

    async def replay(self, destination: str | None = None) -> int:
        now = self._clock()

        async def work(connection: aiosqlite.Connection) -> int:
            cursor = await connection.execute(
                "UPDATE outbox.deliveries SET state = 'pending', attempts = 0,"
                " next_attempt_at = ?, updated_at = ?"
                " WHERE state = 'dead' AND (? IS NULL OR destination = ?)",
                (now, now, destination, destination),
            )
            await connection.execute(
                "DELETE FROM outbox.disabled_destinations WHERE ? IS NULL OR name = ?",
                (destination, destination),
            )
            return cursor.rowcount

        return await self._transaction(work)

    async def outbox_depth(self) -> dict[str, int]:
        return {name: c.pending for name, c in (await self.counts()).items() if c.pending}

    async def outbox_oldest(self, destinations: Sequence[str]) -> float | None:
        # Events are numbered as they are recorded: the lowest number waiting is, near
        # enough, the oldest event, and each destination's is one step of an index.
        async def work(connection: aiosqlite.Connection) -> float | None:
            async with connection.execute(
                "SELECT min(e.created_at) FROM main.events e WHERE e.seq IN ("
                " SELECT (SELECT min(event_seq) FROM outbox.deliveries"
                "  WHERE state = 'pending' AND destination = d.value) FROM json_each(?) d"
                " UNION ALL SELECT (SELECT seq FROM main.events WHERE seq > ("
                "  SELECT seq FROM outbox.cursors WHERE name = 'routed') ORDER BY seq LIMIT 1))",
                (dumps(list(destinations)),),
            ) as cursor:
                row = await cursor.fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._transaction(work)

    async def ping(self, *, within: float) -> None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        try:
            await asyncio.to_thread(_take_write_lock, self.path, within)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def counts(self) -> dict[str, DestinationCounts]:
        async def work(connection: aiosqlite.Connection) -> dict[str, DestinationCounts]:
            async with connection.execute(
                "SELECT name, delivered, failed, dead FROM outbox.destination_counts"
            ) as cursor:
                rows = await cursor.fetchall()
            async with connection.execute(
                "SELECT destination, count(*) FROM outbox.deliveries WHERE state = 'pending'"
                " GROUP BY destination"
            ) as cursor:
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

        return await self._transaction(work)

    async def event_counts(self) -> dict[EventType, int]:
        async def work(connection: aiosqlite.Connection) -> dict[EventType, int]:
            async with connection.execute("SELECT name, value FROM main.counters") as cursor:
                return {_type(name): value for name, value in await cursor.fetchall()}

        return await self._transaction(work)

    def _open_reader(self) -> aiosqlite.Connection:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        return self._reader

    async def delivered_at(self, message_id: str) -> tuple[float, bool] | None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        try:
            async with self._lookups.execute(
                "SELECT coalesce(delivered_at, created_at), delivered_at IS NOT NULL"
                " FROM main.messages WHERE id = ?",
                (message_id,),
            ) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise StoreError(f"store {self.path}: {exc}") from exc
        return (float(row[0]), bool(row[1])) if row is not None else None

    async def rollup(self, *, limit: int = ROLLUP_BATCH) -> int:
        async with (
            self._lock,
            self._background.execute(
                "SELECT seq, (SELECT coalesce(max(seq), 0) FROM main.events) FROM outbox.cursors"
                " WHERE name = 'rolled_up'"
            ) as cursor,
        ):
            row = await cursor.fetchone()
        if row is None or row[0] >= row[1]:
            return 0

        async def work(connection: aiosqlite.Connection) -> int:
            return await statistics.roll_up_next(connection, limit)

        return await self._transaction(work)

    async def stats(self, query: StatsQuery) -> StatsTable:
        reader = self._open_reader()
        try:
            return await statistics.read(reader, query)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def purge(self, before: float, *, batch: int = PURGE_BATCH) -> tuple[int, int]:
        # See `retention`: a snapshot, made durable, bounds every batch.
        async def snapshot() -> retention.Snapshot:
            async with self._lock:
                try:
                    at = await retention.snapshot(self._background)
                    await retention.make_durable(self._background)
                except sqlite3.Error as exc:
                    await rollback(self._background)
                    raise StoreError(f"store {self.path}: retention: {exc}") from exc
                return at

        at = await self._shielded(snapshot)
        done = [0, 0]
        for index, step in enumerate((retention.delete_events, retention.stub_messages)):
            while True:

                async def work(connection: aiosqlite.Connection, step: Step = step) -> int:
                    return await step(connection, before, batch, at)

                count = await self._transaction(work, immediate=True)
                done[index] += count
                if count < batch:
                    break
        return done[0], done[1]

    async def checkpoint(self) -> None:
        """Copy both WALs into their databases as far as no reader needs them (never
        waiting for readers or writers), so that the WALs stop growing."""
        async with self._lock:
            try:
                await self._background.execute("PRAGMA main.wal_checkpoint(PASSIVE)")
                await self._background.execute("PRAGMA outbox.wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: checkpoint failed: {exc}") from exc

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            try:
                await self.checkpoint()
            except StoreError as exc:
                log.warning("%s", exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._checkpointer.cancel()
        await asyncio.gather(self._checkpointer, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._writer.close()
        await self._background.close()
        await self._reader.close()
        await self._lookups.close()
