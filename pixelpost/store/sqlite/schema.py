"""Opening SQLite files: connection settings, and versioned migrations per schema
(`migrations/sqlite/<schema>/NNNN_*.sql`, applied in order, the version kept in
`PRAGMA user_version`)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from importlib import resources
from pathlib import Path

import aiosqlite

from pixelpost import __version__
from pixelpost.store.base import StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
)


def migrations(schema: str) -> list[tuple[int, str, str]]:
    """The migrations of `schema` ("log" or "outbox"): (version, file name, SQL)."""
    folder = resources.files("pixelpost.store") / "migrations" / "sqlite" / schema
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8")))
    return sorted(found)


async def connect(path: Path, *, outbox: Path | None = None) -> aiosqlite.Connection:
    """A connection to the file at `path` with the store's settings, and the outbox file
    attached as `outbox` when given; closed again if setting it up fails."""
    connection = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            await connection.execute(pragma)
        if outbox is not None:
            await connection.execute("ATTACH DATABASE ? AS outbox", (str(outbox),))
    except BaseException:
        await connection.close()
        raise
    return connection


async def rollback(connection: aiosqlite.Connection) -> None:
    """Roll back, keeping the error that caused it (a failed BEGIN has nothing to undo)."""
    with contextlib.suppress(sqlite3.Error):
        await connection.execute("ROLLBACK")


async def migrate(path: Path, schema: str) -> None:
    """Create or upgrade the file at `path` to the latest version of `schema`."""
    connection = await connect(path)
    try:
        async with connection.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        known = migrations(schema)
        latest = known[-1][0] if known else 0
        if current > latest:
            raise StoreError(
                f"store {path} has schema version {current} ({schema}), newer than "
                f"pixelpost {__version__} knows ({latest}): a newer pixelpost has used it; "
                "run that version or a later one (nothing was changed)"
            )
        for version, name, sql in known:
            if version <= current:
                continue
            log.info("store %s: applying migration %s/%s", path, schema, name)
            await connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        await connection.execute(statement)
                await connection.execute(f"PRAGMA user_version = {version}")
                await connection.execute("COMMIT")
            except BaseException:
                await rollback(connection)
                raise
    finally:
        await connection.close()
