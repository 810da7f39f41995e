"""`pixelpost store copy`: a SQLite store, possibly still in use, copied into a new
PostgreSQL store with COPY, every table in one transaction, and checked by counts.

The two SQLite files are read read-only in one read transaction that looks at the
outbox first and the log after it: whatever the outbox has routed, counted or still has
to deliver is then in the log that is copied, and what the log took in between is
copied as not routed and not counted yet. What either file takes later is not copied.
Where SQLite keeps cursors, PostgreSQL keeps a row per event still to route or to count
(pixelpost/store/migrations/postgresql/main/0001_initial.sql): the cursors become rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from pixelpost.errors import PixelpostError
from pixelpost.store import StoreError
from pixelpost.store.postgresql.database import Connection, Database, describe
from pixelpost.store.sqlite.schema import BUSY_TIMEOUT_MS, migrations
from pixelpost.store.sqlite.store import outbox_path

log = logging.getLogger(__name__)

BATCH = 10_000
"""Rows read from SQLite and written with one COPY at a time."""
PROGRESS_EVERY = 100_000
"""Rows of a table between two lines of progress."""
LOCK_TIMEOUT = "10s"
"""How long to wait for a target whose tables another process holds."""
SUPPORTED = "--from sqlite:///PATH --to postgresql://…"

Row = tuple[Any, ...]


def _tags(text: str) -> list[str]:
    return [str(tag) for tag in json.loads(text)]


def _message(row: Row) -> Row:
    """A message as PostgreSQL keeps it: its tags an array, not JSON; stubbed a flag,
    not a place before SQLite's cursor."""
    message_id, config_set, created_at, mail, delivered_at, tags, stubbed = row
    return (message_id, config_set, created_at, mail, delivered_at, _tags(tags), bool(stubbed))


@dataclass(frozen=True, kw_only=True, slots=True)
class Table:
    """A table of the PostgreSQL store, and how its rows are read from SQLite."""

    name: str
    columns: tuple[str, ...]
    select: str
    """The rows, in `columns`' order; `:routed`, `:rolled_up` and `:stubbed` are the
    outbox's cursors."""
    convert: Callable[[Row], Row] | None = None


# In the order of the list; each one's rows as SQLite has them. The counters
# go to shard 0 of PostgreSQL's (its readers add the shards up).
TABLES = (
    Table(
        name="messages",
        columns=("id", "config_set", "created_at", "mail", "delivered_at", "tags", "stubbed"),
        select="SELECT id, config_set, created_at, mail, delivered_at, tags, rowid <= :stubbed"
        " FROM main.messages",
        convert=_message,
    ),
    Table(
        name="events",
        columns=("seq", "id", "message_id", "type", "created_at", "detail"),
        select="SELECT seq, id, message_id, type, created_at, detail FROM main.events",
    ),
    Table(
        name="route_queue",
        columns=("seq",),
        select="SELECT seq FROM main.events WHERE seq > :routed",
    ),
    Table(
        name="rollup_queue",
        columns=("seq",),
        select="SELECT seq FROM main.events WHERE seq > :rolled_up",
    ),
    Table(
        name="counters",
        columns=("name", "shard", "value"),
        select="SELECT name, 0, value FROM main.counters",
    ),
    Table(
        name="deliveries",
        columns=(
            "event_seq",
            "destination",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "updated_at",
        ),
        # Those of events in the snapshot: retention may delete an event (it was
        # delivered) after the outbox's snapshot and before the log's.
        select="SELECT event_seq, destination, state, attempts, next_attempt_at, last_error,"
        " updated_at FROM outbox.deliveries AS d"
        " WHERE EXISTS (SELECT 1 FROM main.events AS e WHERE e.seq = d.event_seq)",
    ),
    Table(
        name="destination_counts",
        columns=("name", "shard", "delivered", "failed", "dead"),
        select="SELECT name, 0, delivered, failed, dead FROM outbox.destination_counts",
    ),
    Table(
        name="disabled_destinations",
        columns=("name", "disabled_at", "reason"),
        select="SELECT name, disabled_at, reason FROM outbox.disabled_destinations",
    ),
    Table(
        name="sns_subscriptions",
        columns=(
            "destination",
            "arn",
            "endpoint",
            "topic_arn",
            "token",
            "state",
            "requested_at",
            "changed_at",
        ),
        select="SELECT destination, arn, endpoint, topic_arn, token, state, requested_at,"
        " changed_at FROM outbox.sns_subscriptions",
    ),
    Table(
        name="stats",
        columns=("period", "tag", "link", "config_set", "bucket", "metric", "value"),
        select="SELECT period, tag, link, config_set, bucket, metric, value FROM outbox.stats",
    ),
    Table(
        name="stats_firsts",
        columns=("message_id", "what"),
        select="SELECT message_id, what FROM outbox.stats_firsts",
    ),
    Table(
        name="suppression",
        columns=("address", "config_set", "reason", "created_at", "message_id"),
        select="SELECT address, config_set, reason, created_at, message_id FROM main.suppression",
    ),
)

CURSORS = "SELECT name, seq FROM outbox.cursors"
LAST_EVENT = "SELECT coalesce(max(seq), 0) FROM main.events"
# Past the copied events, so that the next one is numbered as SQLite would number it.
SET_SEQUENCE = (
    "SELECT setval(pg_get_serial_sequence('events', 'seq'), max(seq)) FROM events"
    " HAVING max(seq) IS NOT NULL"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Counted:
    """One table's rows in the source's snapshot and in the target."""

    table: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass(frozen=True, kw_only=True, slots=True)
class Copied:
    """What a copy found; it is committed only when every count matches."""

    tables: list[Counted] = field(default_factory=list)
    last_event: int = 0
    """The newest event of the snapshot."""

    @property
    def matches(self) -> bool:
        return all(counted.ok for counted in self.tables)


def endpoints(source: str, target: str) -> tuple[Path, str]:
    """The SQLite log's path and the PostgreSQL URL of `--from` and `--to`; an error
    naming what is supported for any other pair."""
    if (
        source.startswith("sqlite:///")
        and len(source) > len("sqlite:///")
        and target.startswith(("postgresql://", "postgres://"))
    ):
        return Path(source.removeprefix("sqlite:///")), target
    raise PixelpostError(
        f"cannot copy from {_shown(source)} to {_shown(target)}: pixelpost store copy copies "
        f"a SQLite store into PostgreSQL ({SUPPORTED})"
    )


def _shown(url: str) -> str:
    """`url` without a password, for messages."""
    if url.startswith(("postgresql://", "postgres://")):
        return describe(url)
    scheme, found, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if found and "@" in rest else url


def format_counts(copied: Copied) -> list[str]:
    """The table of counts: each table's rows in the source and in the target."""
    rows = [("TABLE", "SOURCE", "TARGET", "CHECK")] + [
        (c.table, str(c.source), str(c.target), "ok" if c.ok else "MISMATCH")
        for c in copied.tables
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        f"{table.ljust(widths[0])}  {source.rjust(widths[1])}  {target.rjust(widths[2])}  {check}"
        for table, source, target, check in rows
    ]


def _check_there(path: Path) -> None:
    """An error unless the log at `path` and its outbox are there (SQLite would say only
    that it cannot open a file)."""
    if not path.is_file():
        raise StoreError(f"no store at {path} (--from): the file does not exist")
    if not outbox_path(path).is_file():
        raise StoreError(f"no store at {path} (--from): its outbox {outbox_path(path)} is missing")


async def _open_source(path: Path) -> aiosqlite.Connection:
    """The log at `path`, read only, with its outbox attached; an error for a store
    that is not there or not at this pixelpost's schema."""
    await asyncio.to_thread(_check_there, path)
    files = {"log": path, "outbox": outbox_path(path)}
    uris = {schema: f"{file.resolve().as_uri()}?mode=ro" for schema, file in files.items()}
    try:
        connection = await aiosqlite.connect(uris["log"], uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from exc
    try:
        await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await connection.execute("ATTACH DATABASE ? AS outbox", (uris["outbox"],))
        for schema, database in (("log", "main"), ("outbox", "outbox")):
            async with connection.execute(f"PRAGMA {database}.user_version") as cursor:
                row = await cursor.fetchone()
            version, latest = int(row[0]) if row else 0, migrations(schema)[-1][0]
            if version != latest:
                raise StoreError(
                    f"store {path} has schema version {version} ({schema}), this pixelpost "
                    f"copies version {latest}: run `pixelpost migrate` with this version on it "
                    "first (or copy it with the version that wrote it)"
                )
    except BaseException as exc:
        await connection.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot read the store {path}: {exc}") from exc
        raise
    return connection


async def _take_empty(connection: Connection, where: str) -> None:
    """Hold every table of the target for the transaction (nothing else writes them
    meanwhile), or refuse a target that holds rows already, naming the tables."""
    names = ", ".join(table.name for table in TABLES)
    await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        await connection.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
    except asyncpg.LockNotAvailableError:
        raise PixelpostError(
            f"the target {where} is in use: another process has held its tables for "
            f"{LOCK_TIMEOUT}; stop what uses it and copy again (nothing was written)"
        ) from None
    await connection.execute("SET LOCAL lock_timeout = 0")
    held = [
        table.name
        for table in TABLES
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table.name})")  # noqa: S608 (a fixed name)
    ]
    if held:
        raise PixelpostError(
            f"the target {where} is not empty (it holds {', '.join(held)}): pixelpost store "
            "copy copies into a new store only; nothing was written"
        )


async def _batches(cursor: aiosqlite.Cursor) -> AsyncIterator[list[Row]]:
    """The cursor's rows, `BATCH` at a time; the next batch is read (on the
    connection's thread) while the caller writes this one."""
    ahead = asyncio.ensure_future(cursor.fetchmany(BATCH))
    try:
        while rows := await ahead:
            ahead = asyncio.ensure_future(cursor.fetchmany(BATCH))
            yield [tuple(row) for row in rows]
    finally:
        if not ahead.done():
            ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)


async def _copy_table(
    source: aiosqlite.Connection,
    target: Connection,
    table: Table,
    cursors: dict[str, int],
    total: int,
) -> None:
    log.info("store copy: %s: %d rows", table.name, total)
    started = time.monotonic()
    done = 0
    async with source.execute(table.select, cursors) as cursor:
        async for rows in _batches(cursor):
            records = [table.convert(row) for row in rows] if table.convert else rows
            await target.copy_records_to_table(table.name, records=records, columns=table.columns)
            if (done + len(rows)) // PROGRESS_EVERY > done // PROGRESS_EVERY:
                rate = (done + len(rows)) / max(time.monotonic() - started, 1e-6)
                log.info(
                    "store copy: %s: %d of %d rows (%.0f rows/s)",
                    table.name,
                    done + len(rows),
                    total,
                    rate,
                )
            done += len(rows)


async def _copy_tables(source: aiosqlite.Connection, target: Connection) -> Copied:
    """Copy every table of the source's snapshot (in the target's transaction), and
    count the rows on both sides."""
    await source.execute("BEGIN")
    try:
        # The outbox's snapshot first, the log's after it: every event that the outbox
        # has routed or counted is then in the log's.
        async with source.execute(CURSORS) as cursor:
            cursors = {str(name): int(seq) for name, seq in await cursor.fetchall()}
        cursors.setdefault("stubbed", 0)
        async with source.execute(LAST_EVENT) as cursor:
            row = await cursor.fetchone()
        last_event = int(row[0]) if row else 0
        in_source = {}
        for table in TABLES:
            count = f"SELECT count(*) FROM ({table.select})"  # noqa: S608 (fixed statements)
            async with source.execute(count, cursors) as cursor:
                row = await cursor.fetchone()
            in_source[table.name] = int(row[0]) if row else 0
        for table in TABLES:
            await _copy_table(source, target, table, cursors, in_source[table.name])
            if table.name == "events":
                await target.execute(SET_SEQUENCE)
    finally:
        await source.execute("ROLLBACK")
    counted = [
        Counted(
            table=table.name,
            source=in_source[table.name],
            target=int(await target.fetchval(f"SELECT count(*) FROM {table.name}")),  # noqa: S608 (a fixed name)
        )
        for table in TABLES
    ]
    return Copied(tables=counted, last_event=last_event)


async def copy(source: Path, target: str) -> Copied:
    """Copy the SQLite store whose log is at `source` into the PostgreSQL store at
    `target` (created and migrated as needed, and empty), in one transaction, committed
    only when every table's count matches."""
    reader = await _open_source(source)
    try:
        db = await Database.open(target)
        try:
            async with db.connection() as connection:
                transaction = connection.transaction()
                await transaction.start()
                committed = False
                try:
                    await _take_empty(connection, db.where)
                    log.info("store copy: from %s to %s", source, db.where)
                    copied = await _copy_tables(reader, connection)
                    if copied.matches:
                        await transaction.commit()
                        committed = True
                finally:
                    if not committed:
                        await transaction.rollback()
        finally:
            await db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {source}: {exc}") from exc
    finally:
        await reader.close()
    return copied


def cmd_copy(args: argparse.Namespace) -> int:
    source, target = endpoints(args.source, args.target)
    copied = asyncio.run(copy(source, target))
    for line in format_counts(copied):
        print(line)
    if not copied.matches:
        differ = ", ".join(c.table for c in copied.tables if not c.ok)
        raise PixelpostError(
            f"the counts differ ({differ}): nothing was committed to {describe(target)}"
        )
    print(
        f"copied up to event {copied.last_event}; events recorded after the snapshot are not "
        "copied: stop the relay and the tracker before the final copy"
    )
    return 0
