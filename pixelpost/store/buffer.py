"""Opens and clicks on their way to the store, answered within a bounded time.

A recipient's pixel or redirect waits for its hit's commit at most `answer_within`
seconds. The commit normally takes a millisecond, so the hit is on disk before the
answer goes out; a store slower than that (locked by another process, or down) no longer
holds the answer up: the hit stays here, in memory, and is given to the store again
until it takes it. At most `capacity` hits are held; past that a hit is dropped rather
than waited for, which a log line (at most one every `DROPS_LOGGED_EVERY` seconds) and
`on_dropped` report.

It wraps any `HitRecorder`, so that every store gets the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from pixelpost.logs import LogEvery
from pixelpost.store.base import Hit, HitRecorder

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


class _Pending:
    """The hits of one commit of the store, and their answer."""

    __slots__ = ("answer", "count", "hits", "timer")

    def __init__(self, answer: _Answer, timer: asyncio.TimerHandle) -> None:
        self.answer = answer
        self.timer = timer
        self.hits: list[Sequence[Hit]] = []
        self.count = 0


def _answer(answer: _Answer) -> None:
    if not answer.done():
        answer.set_result(None)


class HitBuffer:
    """A `HitRecorder` that answers within `answer_within` whatever `recorder` does."""

    def __init__(
        self,
        recorder: HitRecorder,
        *,
        answer_within: float = ANSWER_WITHIN,
        capacity: int = CAPACITY,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        on_dropped: Callable[[int], object] = lambda count: None,
    ) -> None:
        self._recorder = recorder
        self._answer_within = answer_within
        self._capacity = capacity
        self._retry_delays = tuple(retry_delays)
        self._on_dropped = on_dropped
        self._held = 0
        self._pending: dict[asyncio.Future[None], _Pending] = {}
        self._again: list[Hit] = []
        """Hits the store refused, to be given to it again."""
        self._retrying: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._drops_logged = LogEvery(DROPS_LOGGED_EVERY)
        self._failures_logged = LogEvery(FAILURES_LOGGED_EVERY)

    @property
    def held(self) -> int:
        """Hits not known to be in the store yet."""
        return self._held

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        """Give `hits` to the store; what this returns is done once they are committed,
        or after `answer_within` seconds with the hits held here."""
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
            answer = _Answer(loop=loop)
            pending = _Pending(answer, loop.call_later(self._answer_within, _answer, answer))
            self._pending[committed] = pending
            committed.add_done_callback(self._committed)
        pending.hits.append(hits)
        pending.count += len(hits)
        return pending.answer

    def _committed(self, committed: asyncio.Future[None]) -> None:
        pending = self._pending.pop(committed)
        pending.timer.cancel()
        _answer(pending.answer)
        error = committed.exception() if not committed.cancelled() else "cancelled"
        if error is None:
            self._release(pending.count)
            return
        if (more := self._failures_logged.due()) is not None:
            log.warning(
                "store: %d hits (opens and clicks) kept in memory, to be recorded later: %s%s",
                pending.count,
                error,
                more,
            )
        self._again += [hit for part in pending.hits for hit in part]
        if self._retrying is None:
            self._retrying = asyncio.create_task(self._retry(), name="hit buffer retries")

    async def _retry(self) -> None:
        failures = 0
        while self._again:
            await asyncio.sleep(self._retry_delays[min(failures, len(self._retry_delays) - 1)])
            batch, self._again = self._again[:RETRY_BATCH], self._again[RETRY_BATCH:]
            try:
                await self._recorder.record_hits(batch)
            except asyncio.CancelledError:
                self._again[:0] = batch
                raise
            except Exception as exc:  # whatever the store says, the hits are kept
                self._again[:0] = batch
                failures += 1
                if (more := self._failures_logged.due()) is not None:
                    log.warning(
                        "store: still cannot record the %d hits (opens and clicks) held in"
                        " memory: %s%s",
                        len(self._again),
                        exc,
                        more,
                    )
            else:
                failures = 0
                self._release(len(batch))
                if not self._again:
                    log.info("store: the hits (opens and clicks) held in memory are recorded")
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
        those held; those it refused until then are counted as dropped."""
        self._closed = True
        if self._held:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):  # what is left is told below
                async with asyncio.timeout(grace):
                    await self._drained
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
        if self._held:
            # Those still in the store's hands may yet be committed as it closes.
            log.error(
                "store: %d hits (opens and clicks) not recorded, and %d not known to be: the"
                " store did not take them within %.1f s of shutdown",
                len(self._again),
                self._held - len(self._again),
                grace,
            )
            self._on_dropped(len(self._again))
