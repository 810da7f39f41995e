"""The SQLite store's connections, and how work runs on them.

    writer       the log's group commit (pixelpost.store.sqlite.writer): messages, events,
                 opens and clicks
    background   the outbox's connection, with the log attached: routing, claims,
                 roll-up and retention, one transaction at a time
    reader       statistics, so that they never queue behind the dispatcher's work
    lookups      the tracker's delivery-time lookups, which must not queue behind
                 statistics either
    inline       read-only, used on the event loop's own thread for the relay's
                 suppression lookups: an indexed read takes microseconds, a hop to a
                 connection's thread and back a few hundred (bench/suppression.py)

Each role of the store (log, outbox, statistics, retention) holds the one `Database`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from pixelpost.store.base import StoreError
from pixelpost.store.sqlite import queries
from pixelpost.store.sqlite.schema import BUSY_TIMEOUT_MS, connect, migrate, rollback
from pixelpost.store.sqlite.writer import GroupCommit

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_INTERVAL = 1.0
_BUSY_RETRIES = 20
IMMEDIATE_BUSY_MS = 200


def outbox_path(path: Path) -> Path:
    """The outbox file that goes with the log at `path`."""
    return path.with_name(f"{path.stem}-outbox{path.suffix}")


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


async def _connect_all(
    path: Path, writer: GroupCommit
) -> tuple[aiosqlite.Connection, aiosqlite.Connection, aiosqlite.Connection]:
    """Migrate both files and open the writer and the three other connections; on any
    failure, close what was opened."""
    opened: list[aiosqlite.Connection] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        await migrate(path, "log")
        await migrate(outbox_path(path), "outbox")
        await writer.open()
        background = await connect(path, outbox=outbox_path(path))
        opened.append(background)
        # The outbox's state can all be redone: after a power loss its last commits may
        # roll back, and events are routed or delivered once more (at least once, as
        # promised). Not syncing them spares an fsync per claim.
        await background.execute("PRAGMA outbox.synchronous = NORMAL")
        await background.execute("PRAGMA temp_store = MEMORY")
        opened.append(reader := await connect(path, outbox=outbox_path(path)))
        opened.append(lookups := await connect(path))
    except BaseException as exc:
        await writer.close()
        for connection in opened:
            await connection.close()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        raise
    return background, reader, lookups


class Database:
    """The connections of one SQLite store (see the module's docstring)."""

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
        self.writer = writer
        self.background = background
        self._reader = reader
        self._lookups = lookups
        self._inline: sqlite3.Connection | None = None
        self.clock = clock
        self.lock = asyncio.Lock()
        """Held while the background connection is in use."""
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="store checkpoints")

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> Database:
        """Open (creating and migrating as needed) the store whose log is at `path`."""
        writer = GroupCommit(path)
        background, reader, lookups = await _connect_all(path, writer)
        return cls(
            path=path,
            writer=writer,
            background=background,
            reader=reader,
            lookups=lookups,
            clock=clock,
        )

    def error(self, exc: BaseException, what: str = "") -> StoreError:
        return StoreError(f"store {self.path}: {what}{exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")

    @property
    def reader(self) -> aiosqlite.Connection:
        self._check_open()
        return self._reader

    @property
    def lookups(self) -> aiosqlite.Connection:
        self._check_open()
        return self._lookups

    @property
    def inline(self) -> sqlite3.Connection:
        """The read-only connection for reads on the event loop's thread (opened at
        first use). It never waits for a lock: where SQLite would, it says busy at once,
        and the caller reads on `lookups` instead."""
        self._check_open()
        if self._inline is None:
            try:
                self._inline = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._inline.execute("PRAGMA busy_timeout = 0")
            except sqlite3.Error as exc:
                raise self.error(exc) from exc
        return self._inline

    async def transaction(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, immediate: bool = False
    ) -> T:
        """Run `work` in a transaction on the background connection, shielded from
        cancellation: a cancelled caller leaves it to finish, so the connection is never
        left halfway through a transaction. `immediate` takes the write locks of both
        files at the start (waiting for other writers), for work that writes the log."""
        return await self.shielded(functools.partial(self._transaction, work, immediate=immediate))

    async def shielded(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`work()` on the background connection, run to its end even when the caller is
        cancelled (the caller still sees its cancellation)."""
        self._check_open()
        task = asyncio.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _transaction(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, immediate: bool
    ) -> T:
        # A deferred BEGIN: the transaction locks only the file it writes (the outbox),
        # never the log. When another process wrote the outbox between this one's read
        # and write, SQLite says busy at once; the transaction is then run again.
        async with self.lock:
            for attempt in range(_BUSY_RETRIES):
                try:
                    return await self._attempt(work, immediate=immediate)
                except sqlite3.OperationalError as exc:
                    busy = "locked" in str(exc) or "busy" in str(exc)
                    if not busy or attempt == _BUSY_RETRIES - 1:
                        raise self.error(exc) from exc
                    await asyncio.sleep(0.01 * (attempt + 1))
                except sqlite3.Error as exc:
                    raise self.error(exc) from exc
            raise AssertionError("unreachable")

    async def _attempt(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *, immediate: bool
    ) -> T:
        connection = self.background
        if immediate:
            # The log's write lock is taken first and held while waiting for the
            # outbox's: wait briefly, then let go and try again, so that the tracker's
            # commits never wait long behind this.
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
        return result

    async def ping(self, *, within: float) -> None:
        self._check_open()
        try:
            await asyncio.to_thread(_take_write_lock, self.path, within)
        except (sqlite3.Error, OSError) as exc:
            raise self.error(exc) from exc

    async def checkpoint(self) -> None:
        """Copy both WALs into their databases as far as no reader needs them (never
        waiting for readers or writers), so that the WALs stop growing."""
        async with self.lock:
            try:
                for statement in queries.CHECKPOINTS:
                    await self.background.execute(statement)
            except sqlite3.Error as exc:
                raise self.error(exc, "checkpoint failed: ") from exc

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
        await self.writer.close()
        await self.background.close()
        await self._reader.close()
        await self._lookups.close()
        if self._inline is not None:
            self._inline.close()
