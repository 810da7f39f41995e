"""The log's writer: a group commit on a thread and a connection of its own.

A write starts a commit at once when the writer is idle; writes that arrive while one
commits join the next batch, which starts no sooner than `COMMIT_INTERVAL` after the
last one, so that under load one fsync (some 80 us of a core on this machine) serves a
batch. Each batch goes in as one JSON array per table and one statement, so the thread
takes the GIL a few times a batch rather than twice a row; opens and clicks become
events inside SQLite (id, SES timestamp, JSON), in C and without the GIL. Writers get a
future that is done once their rows are on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, dumps
from pixelpost.core.suppression import Suppressed
from pixelpost.store.base import Hit, MessageRecord, StoreError
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.schema import PRAGMAS

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.001
"""The least time between the starts of two commits; 1 ms was best for throughput and
latency together in bench/tracker.py (0, 0.5, 1, 1.5 and 2 ms tried)."""

TYPE_NAMES = {event_type: event_type.name.lower() for event_type in EventType}
"""How event types are written in the log."""


class _Batch(asyncio.Future[None]):
    """The commit that a batch of writers awaits together. It cannot be cancelled: a
    writer whose task is cancelled hears of it once the commit is done, and the other
    writers of its batch are not touched (what `asyncio.shield` would do, without an
    extra future per writer on the tracker's hot path)."""

    def cancel(self, msg: object = None) -> bool:
        return False


class GroupCommit:
    """Appends messages and events to the log, in batches."""

    def __init__(self, path: Path, *, interval: float = COMMIT_INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._connection: sqlite3.Connection | None = None
        self._messages: list[tuple[object, ...]] = []
        self._events: list[tuple[object, ...]] = []
        self._hits: list[tuple[object, ...]] = []
        self._suppressions: list[tuple[object, ...]] = []
        self._batch: _Batch | None = None
        self._committing = False
        self._scheduled = False
        self._last_start = 0.0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

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

    def write(
        self,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        hits: Sequence[Hit] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> asyncio.Future[None]:
        """Queue rows for a commit; the future is done once they are on disk."""
        loop = asyncio.get_running_loop()
        if self._closing:
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_exception(StoreError("the store is closed"))
            return failed
        if messages:
            self._messages += [
                (m.id, m.config_set, m.created_at.timestamp(), m.mail) for m in messages
            ]
        if events:
            self._events += [
                (e.id, e.message_id, TYPE_NAMES[e.type], e.created_at.timestamp(), e.detail)
                for e in events
            ]
        if hits:
            self._hits += [(TYPE_NAMES[hit[0]], *hit[1:]) for hit in hits]
        if suppressions:
            self._suppressions += [
                (e.address, e.reason.value, e.created_at.timestamp(), e.message_id, e.config_set)
                for e in suppressions
            ]
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(loop=loop)
            # A batch whose writers were all cancelled must not warn of an unread error.
            batch.add_done_callback(lambda f: f.exception())
        if not self._committing and not self._scheduled:
            self._start_soon()
        return batch

    def _start_soon(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_start + self._interval - loop.time()
        if wait <= 0:
            self._start()
        else:
            self._scheduled = True
            loop.call_later(wait, self._start)

    def _start(self) -> None:
        self._scheduled = False
        batch, messages, events, hits = self._batch, self._messages, self._events, self._hits
        suppressions = self._suppressions
        assert batch is not None
        self._batch, self._messages, self._events, self._hits = None, [], [], []
        self._suppressions = []
        loop = asyncio.get_running_loop()
        self._last_start = loop.time()
        self._committing = True
        self._idle.clear()
        running = loop.run_in_executor(
            self._executor,
            self._commit,
            dumps(messages) if messages else None,
            dumps(events) if events else None,
            dumps(hits) if hits else None,
            dumps(suppressions) if suppressions else None,
        )
        size = len(messages) + len(events) + len(hits) + len(suppressions)
        running.add_done_callback(lambda done: self._committed(done, batch, size))

    def _committed(self, done: asyncio.Future[None], batch: _Batch, size: int) -> None:
        self._committing = False
        error = done.exception()
        if error is not None:
            log.error("store: a commit of %d rows failed: %s", size, error)
            batch.set_exception(StoreError(f"cannot write to the store: {error}"))
        else:
            batch.set_result(None)
        if self._batch is not None:
            self._start_soon()
        else:
            self._idle.set()

    def _commit(
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
        self._closing = True
        await self._idle.wait()
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._connection.close
            )
        self._executor.shutdown(wait=True)
