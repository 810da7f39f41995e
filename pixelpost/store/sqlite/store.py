"""`SQLiteStore`: every role of the store (pixelpost.store.base) on one `Database`, the
log written through the group commit, the outbox through a second connection that
reads the log and writes only the outbox file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pixelpost.store.sqlite.database import Database, outbox_path
from pixelpost.store.sqlite.log import SQLiteMessageLog
from pixelpost.store.sqlite.outbox import SQLiteOutbox
from pixelpost.store.sqlite.retention import SQLiteRetention
from pixelpost.store.sqlite.statistics import SQLiteStatistics
from pixelpost.store.sqlite.subscriptions import SQLiteSnsSubscriptions
from pixelpost.store.sqlite.suppression import SQLiteSuppressionList

__all__ = ["SQLiteStore", "outbox_path"]


class SQLiteStore(
    SQLiteMessageLog,
    SQLiteOutbox,
    SQLiteStatistics,
    SQLiteRetention,
    SQLiteSuppressionList,
    SQLiteSnsSubscriptions,
):
    """The store in two SQLite files (see the package's docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> SQLiteStore:
        """Open (creating and migrating as needed) the store whose log is at `path`."""
        return cls(await Database.open(path, clock=clock))

    @property
    def path(self) -> Path:
        return self._db.path

    async def ping(self, *, within: float) -> None:
        await self._db.ping(within=within)

    async def checkpoint(self) -> None:
        """Copy both WALs into their databases as far as no reader needs them."""
        await self._db.checkpoint()

    async def close(self) -> None:
        await self._db.close()
