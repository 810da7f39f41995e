"""Finding the spool's messages that nobody handed to this process.

At start, `SpoolScanner.recover` opens the spool and schedules what a previous run left
there, each when its state file says. Then, every `SCAN_INTERVAL`, `SpoolScanner.run`
picks up what other relay processes on the same spool accepted, left or deferred, and
retries every message at once when `pixelpost queue flush` asked for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pixelpost.core.ids import message_id_time
from relay.outbound.runner import SCAN_INTERVAL, DeliveryRunner
from relay.outbound.spool import Spool

# The delivery queue's logger: its lines keep the `logger` they always had.
log = logging.getLogger("relay.outbound.queue")

NEW_MESSAGE_GRACE = 10.0
"""Seconds a scan leaves a message never tried yet to the process that accepted it (this
one still spooling it, or another relay process): that one delivers it from memory with
its tracking planned, where a scan would read it back and plan it again."""


def _accepted_at(message_id: str) -> float:
    """When a spool file's message was accepted, by its name (0 for a name that is not a
    message id: try it now)."""
    try:
        return message_id_time(message_id)
    except ValueError:
        return 0.0


class SpoolScanner:
    """Puts on the schedule what is in the spool and not on it yet."""

    def __init__(self, *, spool: Spool, runner: DeliveryRunner) -> None:
        self._spool = spool
        self._runner = runner
        self._flushed_at = 0.0

    async def recover(self) -> list[str]:
        """Open the spool and schedule the messages waiting there; returns their ids."""
        ids = await self._spool.run(self._spool.open)
        await self._schedule(ids)
        self._flushed_at = self._spool.flush_requested_at()
        return ids

    async def run(self) -> None:
        """Pick up what other relay processes spooled or left, and flush requests."""
        while True:
            await asyncio.sleep(SCAN_INTERVAL)
            try:
                await self._scan()
            except Exception:  # the scan must go on: it is how other relays' mail is found
                log.exception("spool %s: cannot scan", self._spool.path)

    async def _scan(self) -> None:
        flushed = self._spool.flush_requested_at()
        ids = await self._spool.run(self._spool.ids)
        if flushed > self._flushed_at:
            self._flushed_at = flushed
            log.info("spool %s: flush requested: retrying all now", self._spool.path)
            for message_id in ids:
                self._runner.at(message_id, 0.0)
        unknown = [i for i in ids if not self._runner.knows(i)]
        await self._schedule(unknown, scanned=True)

    async def _schedule(self, ids: Sequence[str], *, scanned: bool = False) -> None:
        """Schedule `ids` when their state files say; a message never tried yet that a
        scan found, once its accepting process had `NEW_MESSAGE_GRACE` for it."""

        def read_states() -> list[tuple[str, float]]:
            return [(i, self._spool.state(i).next_attempt_at) for i in ids]

        states = await self._spool.run(read_states)
        for message_id, next_attempt in states:
            new = scanned and not next_attempt
            self._runner.at(
                message_id, _accepted_at(message_id) + NEW_MESSAGE_GRACE if new else next_attempt
            )
