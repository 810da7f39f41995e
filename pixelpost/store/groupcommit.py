"""The group commit that every store's writer uses: messages, events, opens and clicks
and suppressions, written in batches with one commit each.

A write starts a commit at once when the writer is idle; writes that arrive while one
commits join the next batch, which starts no sooner than `COMMIT_INTERVAL` after the
last one, so that under load one commit (and its fsync) serves a batch. Writers get a
future that is done once their rows are durable. How a batch is committed is the
store's (`GroupCommit._commit`): SQLite on a thread of its own, PostgreSQL on a pooled
connection.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Sequence

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event
from pixelpost.core.suppression import Suppressed
from pixelpost.store.base import Hit, MessageRecord, StoreError

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.001
"""The least time between the starts of two commits; 1 ms was best for throughput and
latency together in bench/tracker.py (0, 0.5, 1, 1.5 and 2 ms tried)."""

TYPE_NAMES = {event_type: event_type.name.lower() for event_type in EventType}
"""How event types are written in the log."""

Row = tuple[object, ...]


class Rows:
    """One batch, as tuples (see `GroupCommit.write` for their fields)."""

    __slots__ = ("events", "hits", "messages", "suppressions")

    def __init__(self) -> None:
        self.messages: list[Row] = []
        """(id, config_set, created_at, mail)"""
        self.events: list[Row] = []
        """(id, message_id, type name, created_at, detail)"""
        self.hits: list[Row] = []
        """(type name, message_id, ip, user_agent, at, link, link_tags, machine, reason,
        proxy)"""
        self.suppressions: list[Row] = []
        """(address, reason, created_at, message_id, config_set)"""

    def __len__(self) -> int:
        return len(self.messages) + len(self.events) + len(self.hits) + len(self.suppressions)


class _Batch(asyncio.Future[None]):
    """The commit that a batch of writers awaits together. It cannot be cancelled: a
    writer whose task is cancelled hears of it once the commit is done, and the other
    writers of its batch are not touched (what `asyncio.shield` would do, without an
    extra future per writer on the tracker's hot path)."""

    def cancel(self, msg: object = None) -> bool:
        return False


class GroupCommit(abc.ABC):
    """Appends messages and events to the log, in batches."""

    def __init__(self, *, interval: float = COMMIT_INTERVAL) -> None:
        self._interval = interval
        self._rows = Rows()
        self._batch: _Batch | None = None
        self._committing = False
        self._scheduled = False
        self._last_start = 0.0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @abc.abstractmethod
    def _commit(self, rows: Rows) -> Awaitable[None]:
        """Write `rows` in one transaction; done once it is committed."""

    def write(
        self,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        hits: Sequence[Hit] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> asyncio.Future[None]:
        """Queue rows for a commit; the future is done once they are durable."""
        loop = asyncio.get_running_loop()
        if self._closing:
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_exception(StoreError("the store is closed"))
            return failed
        rows = self._rows
        if messages:
            rows.messages += [
                (m.id, m.config_set, m.created_at.timestamp(), m.mail) for m in messages
            ]
        if events:
            rows.events += [
                (e.id, e.message_id, TYPE_NAMES[e.type], e.created_at.timestamp(), e.detail)
                for e in events
            ]
        if hits:
            rows.hits += [(TYPE_NAMES[hit[0]], *hit[1:]) for hit in hits]
        if suppressions:
            rows.suppressions += [
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
        batch, rows = self._batch, self._rows
        assert batch is not None
        self._batch, self._rows = None, Rows()
        loop = asyncio.get_running_loop()
        self._last_start = loop.time()
        self._committing = True
        self._idle.clear()
        running = asyncio.ensure_future(self._commit(rows))
        size = len(rows)
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

    async def _drain(self) -> None:
        """Stop taking writes and wait for what is pending to be committed."""
        self._closing = True
        await self._idle.wait()
