"""Opens and clicks on their way to the store, answered within a bounded time.

A recipient's pixel or redirect waits for its hit's commit at most `answer_within`
seconds. The commit normally takes a millisecond, so the hit is in the store before the
answer goes out; a store slower than that (locked by another process, or down) no longer
holds the answer up: the hit is kept here and given to the store again until it takes
it. With a journal (pixelpost.store.journal) the hits are first written to local disk,
fsync'd, and only then answered, so that an answered hit survives the process, even a
SIGKILL: the next process to start on that folder gives them to the store. Without one
they are kept in memory only. At most `capacity` hits are held; past that a hit is
dropped rather than waited for, which a log line (at most one every
`DROPS_LOGGED_EVERY` seconds) and `on_dropped` report.

It wraps any `HitRecorder`, so that every store gets the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from pixelpost.logs import LogEvery
from pixelpost.store.base import Hit, HitRecorder, StoreError
from pixelpost.store.journal import HitJournal, Segment

log = logging.getLogger(__name__)

ANSWER_WITHIN = 0.05
"""Seconds an answer waits at most for its hit's commit."""
CAPACITY = 50_000
"""Hits held at most (answered or waiting, and not known to be committed): some 50 MB."""
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each new attempt at hits the store refused; the last one repeats."""
RETRY_BATCH = 5000
"""Hits given back to the store at once."""
CLOSE_TIMEOUT = 5.0
"""Seconds `close` waits for the store to take what is held."""
DROPS_LOGGED_EVERY = 10.0
FAILURES_LOGGED_EVERY = 10.0


class _Answer(asyncio.Future[None]):
    """What the hits of one commit are answered on, together. It cannot be cancelled:
    a request whose task is cancelled must not cancel the others' answer."""

    def cancel(self, msg: object = None) -> bool:
        return False


class _Unit:
    """Hits the store has not committed yet, and their file in the journal (being
    written, written, or none)."""

    __slots__ = ("hits", "segment", "writing")

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.writing: asyncio.Future[Segment | None] | None = None
        """Done once the hits are in the journal (or could not be written)."""
        self.segment: Segment | None = None
        """Their file, until they are committed."""


class _Pending:
    """The hits of one commit of the store, and their answer."""

    __slots__ = ("answer", "count", "hits", "late", "timer", "units")

    def __init__(self, answer: _Answer) -> None:
        self.answer = answer
        self.timer: asyncio.TimerHandle | None = None
        self.hits: list[Sequence[Hit]] = []
        """Hits not in the journal."""
        self.count = 0
        self.units: list[_Unit] = []
        """Hits being journaled, or journaled."""
        self.late = False
        """The commit took longer than an answer waits."""


def _answer(answer: _Answer) -> None:
    if not answer.done():
        answer.set_result(None)


class HitBuffer:
    """A `HitRecorder` that answers within `answer_within` whatever `recorder` does."""

    def __init__(
        self,
        recorder: HitRecorder,
        *,
        journal: HitJournal | None = None,
        answer_within: float = ANSWER_WITHIN,
        capacity: int = CAPACITY,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        on_dropped: Callable[[int], object] = lambda count: None,
    ) -> None:
        self._recorder = recorder
        self._journal = journal
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hit-journal")
        self._answer_within = answer_within
        self._capacity = capacity
        self._retry_delays = tuple(retry_delays)
        self._on_dropped = on_dropped
        self._held = 0
        self._pending: dict[asyncio.Future[None], _Pending] = {}
        self._again: list[_Unit] = []
        """Hits the store refused, to be given to it again."""
        self._to_write: list[_Unit] = []
        """Units waiting for the journal's next file."""
        self._writer: asyncio.Task[None] | None = None
        self._users: dict[Segment, int] = {}
        """The units not committed yet of each file in the journal."""
        self._retrying: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._drops_logged = LogEvery(DROPS_LOGGED_EVERY)
        self._failures_logged = LogEvery(FAILURES_LOGGED_EVERY)

    @property
    def held(self) -> int:
        """Hits not known to be in the store yet."""
        return self._held

    async def start(self) -> int:
        """Open the journal, and give the store the hits that processes gone before
        left in it; returns how many."""
        journal = self._journal
        if journal is None:
            return 0
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._disk, journal.open)
            found = await loop.run_in_executor(self._disk, journal.take_over)
        except OSError as exc:
            raise StoreError(
                f"tracker.journal: cannot keep hits in {journal.folder}: {exc}"
            ) from exc
        count = 0
        for segment, hits in found:
            unit = _Unit(hits)
            unit.segment = segment
            self._users[segment] = 1
            self._again.append(unit)
            count += len(hits)
        if count:
            self._held += count
            log.info("hit journal: %d hits left by a process gone before, recording them", count)
            self._retry_soon()
        return count

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        """Give `hits` to the store; what this returns is done once they are committed,
        or after `answer_within` seconds with the hits held here (journaled first, when
        there is a journal)."""
        loop = asyncio.get_running_loop()
        if self._closed or self._held + len(hits) > self._capacity:
            self._drop(len(hits), "closing" if self._closed else "the buffer is full")
            done = loop.create_future()
            done.set_result(None)
            return done
        committed: asyncio.Future[None]
        try:
            committed = asyncio.ensure_future(self._recorder.record_hits(hits))
        except Exception as exc:  # a store that fails at once rather than in its future
            committed = loop.create_future()
            committed.set_exception(exc)
        self._held += len(hits)
        pending = self._pending.get(committed)
        if pending is None:
            # A store that groups its commits returns one future for a whole batch of
            # writers: they share one answer and one timer.
            pending = _Pending(_Answer(loop=loop))
            pending.timer = loop.call_later(self._answer_within, self._too_slow, committed)
            self._pending[committed] = pending
            committed.add_done_callback(self._committed)
        pending.count += len(hits)
        if pending.late and self._journal is not None:
            # Its batch is late already: these are journaled and answered on their own.
            unit = self._journaled(list(hits))
            pending.units.append(unit)
            answer = _Answer(loop=loop)
            self._answer_when_written(unit, answer)
            return answer
        pending.hits.append(hits)
        return pending.answer

    def _too_slow(self, committed: asyncio.Future[None]) -> None:
        """The store has not committed within `answer_within`: answer, once the hits are
        in the journal."""
        pending = self._pending.get(committed)
        if pending is None:
            return
        pending.late = True
        if self._journal is None:
            _answer(pending.answer)
            return
        unit = self._journaled([hit for part in pending.hits for hit in part])
        pending.hits = []
        pending.units.append(unit)
        self._answer_when_written(unit, pending.answer)

    @staticmethod
    def _answer_when_written(unit: _Unit, answer: _Answer) -> None:
        assert unit.writing is not None
        unit.writing.add_done_callback(lambda _: _answer(answer))

    def _journaled(self, hits: list[Hit]) -> _Unit:
        """A unit of `hits`, on its way to the journal: units that come while a file is
        being written share the next one (one fsync for all of them)."""
        unit = _Unit(hits)
        unit.writing = asyncio.get_running_loop().create_future()
        self._to_write.append(unit)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="hit journal")
        return unit

    async def _write(self) -> None:
        assert self._journal is not None
        loop = asyncio.get_running_loop()
        while self._to_write:
            units, self._to_write = self._to_write, []
            hits = [hit for unit in units for hit in unit.hits]
            segment: Segment | None = None
            try:
                segment = await loop.run_in_executor(self._disk, self._journal.write, hits)
            except OSError as exc:
                log.error(
                    "hit journal: %d hits kept in memory only, cannot write to %s: %s",
                    len(hits),
                    self._journal.folder,
                    exc,
                )
            for unit in units:
                unit.segment = segment
                if segment is not None:
                    self._users[segment] = self._users.get(segment, 0) + 1
                assert unit.writing is not None
                unit.writing.set_result(segment)
        self._writer = None

    def _committed(self, committed: asyncio.Future[None]) -> None:
        pending = self._pending.pop(committed)
        if pending.timer is not None:
            pending.timer.cancel()
        error = committed.exception() if not committed.cancelled() else "cancelled"
        if error is None:
            _answer(pending.answer)
            self._forget(pending.units)
            self._release(pending.count)
            return
        if (more := self._failures_logged.due()) is not None:
            log.warning(
                "store: %d hits (opens and clicks) kept %s, to be recorded later: %s%s",
                pending.count,
                "in memory" if self._journal is None else "in the journal",
                error,
                more,
            )
        units = pending.units
        if pending.hits:
            hits = [hit for part in pending.hits for hit in part]
            if self._journal is None:
                units.append(_Unit(hits))
                _answer(pending.answer)
            else:
                units.append(unit := self._journaled(hits))
                self._answer_when_written(unit, pending.answer)
        self._again += units
        self._retry_soon()

    def _retry_soon(self) -> None:
        if self._retrying is None:
            self._retrying = asyncio.create_task(self._retry(), name="hit buffer retries")

    def _forget(self, units: Sequence[_Unit]) -> None:
        """These units' hits are committed: a file goes once all its hits are."""
        if self._journal is None:
            return
        unused: list[Segment] = []
        for unit in units:
            if unit.segment is not None:
                left = self._users[unit.segment] = self._users[unit.segment] - 1
                if left == 0:
                    del self._users[unit.segment]
                    unused.append(unit.segment)
                unit.segment = None
            elif unit.writing is not None and not unit.writing.done():
                unit.writing.add_done_callback(functools.partial(self._forget_later, unit))
        if unused:
            asyncio.get_running_loop().run_in_executor(self._disk, self._journal.done, unused)

    def _forget_later(self, unit: _Unit, _written: object) -> None:
        self._forget([unit])

    async def _retry(self) -> None:
        failures = 0
        while self._again:
            await asyncio.sleep(self._retry_delays[min(failures, len(self._retry_delays) - 1)])
            units: list[_Unit] = []
            count = 0
            while self._again and (not units or count + len(self._again[0].hits) <= RETRY_BATCH):
                units.append(self._again.pop(0))
                count += len(units[-1].hits)
            try:
                await self._recorder.record_hits([hit for unit in units for hit in unit.hits])
            except asyncio.CancelledError:
                self._again[:0] = units
                raise
            except Exception as exc:  # whatever the store says, the hits are kept
                self._again[:0] = units
                failures += 1
                if (more := self._failures_logged.due()) is not None:
                    log.warning(
                        "store: still cannot record the %d hits (opens and clicks) held: %s%s",
                        sum(len(unit.hits) for unit in self._again),
                        exc,
                        more,
                    )
            else:
                failures = 0
                self._forget(units)
                self._release(count)
                if not self._again:
                    where = "in memory" if self._journal is None else "in the journal"
                    log.info("store: the hits (opens and clicks) held %s are recorded", where)
        self._retrying = None

    def _release(self, count: int) -> None:
        self._held -= count
        if self._held == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _drop(self, count: int, why: str) -> None:
        self._on_dropped(count)
        if (more := self._drops_logged.due()) is not None:
            log.error(
                "store: a hit (open or click) not recorded: %s (%d held, the store does not"
                " take them)%s",
                why,
                self._held,
                more,
            )

    async def close(self, *, grace: float = CLOSE_TIMEOUT) -> None:
        """Take no more hits, and wait up to `grace` seconds for the store to take
        those held; those it refused until then stay in the journal for the next start,
        or, without one, are counted as dropped."""
        self._closed = True
        if self._held:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):  # what is left is told below
                async with asyncio.timeout(grace):
                    await self._drained
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
        writing = [unit.writing for unit in self._again if unit.writing is not None]
        await asyncio.gather(*writing, return_exceptions=True)
        kept = sum(len(unit.hits) for unit in self._again if unit.segment is not None)
        lost = sum(len(unit.hits) for unit in self._again if unit.segment is None)
        if self._held:
            # Those still in the store's hands may yet be committed as it closes.
            log.error(
                "store: %d hits (opens and clicks) not recorded%s, and %d not known to be:"
                " the store did not take them within %.1f s of shutdown",
                lost,
                f" ({kept} more kept in the journal for the next start)" if kept else "",
                self._held - lost - kept,
                grace,
            )
            self._on_dropped(lost)
        if self._journal is not None:
            await asyncio.get_running_loop().run_in_executor(self._disk, self._journal.close)
        self._disk.shutdown(wait=True)
