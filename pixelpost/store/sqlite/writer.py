"""The SQLite log's writer: the group commit (pixelpost.store.groupcommit) on a thread
and a connection of its own.

Each batch goes in as one JSON array per table and one statement, so the thread takes
the GIL a few times a batch rather than twice a row; opens and clicks become events
inside SQLite (id, SES timestamp, JSON), in C and without the GIL. Under load one fsync
(some 80 us of a core on this machine) serves a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pixelpost.core.events import dumps
from pixelpost.store import groupcommit
from pixelpost.store.groupcommit import COMMIT_INTERVAL, TYPE_NAMES, Rows
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.schema import PRAGMAS

__all__ = ["COMMIT_INTERVAL", "TYPE_NAMES", "GroupCommit"]


class GroupCommit(groupcommit.GroupCommit):
    """Appends messages and events to the SQLite log, in batches."""

    def __init__(self, path: Path, *, interval: float = COMMIT_INTERVAL) -> None:
        super().__init__(interval=interval)
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    def _connect(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            connection.execute(pragma)
        # Checkpoints (the WAL copied into the database, tens of milliseconds now and then)
        # are the store's background work, so that no writer's commit waits for one.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        self._connection = connection

    def _commit(self, rows: Rows) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(
            self._executor,
            self._write,
            dumps(rows.messages) if rows.messages else None,
            dumps(rows.events) if rows.events else None,
            dumps(rows.hits) if rows.hits else None,
            dumps(rows.suppressions) if rows.suppressions else None,
        )

    def _write(
        self,
        messages: str | None,
        events: str | None,
        hits: str | None,
        suppressions: str | None,
    ) -> None:
        connection = self._connection
        assert connection is not None
        statements = [
            (sql, payload)
            for sql, payload in (
                (queries.INSERT_MESSAGES, messages),
                (queries.INSERT_EVENTS, events),
                (queries.MARK_DELIVERED, events),
                (queries.COUNT_EVENTS, events),
                (queries.INSERT_HITS, hits),
                (queries.COUNT_HITS, hits),
                (queries.SUPPRESS, suppressions),
            )
            if payload is not None
        ]
        connection.execute("BEGIN IMMEDIATE")
        try:
            for sql, payload in statements:
                connection.execute(sql, (payload,))
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        await self._drain()
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._connection.close
            )
        self._executor.shutdown(wait=True)
