"""Background jobs beside the dispatcher: the statistics roll-up, which counts new
events into the hourly counters, and retention, which applies `store.retention_days`.

They run in whichever process dispatches (`pixelpost serve`, or `pixelpost dispatch`),
apart from the dispatcher's own tasks: neither routes nor delivers anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pixelpost.store import Statistics, Store, StoreError

log = logging.getLogger(__name__)

ROLLUP_INTERVAL = 1.0
"""How often new events are added to the statistics."""
PROGRESS_EVERY = 100_000
"""A long backlog (an upgrade, a store copied in) logs its progress this often."""
PURGE_INTERVAL = 3600.0
"""How often `store.retention_days` is applied."""
STORE_ERROR_PAUSE = 5.0


async def catch_up(store: Statistics) -> int:
    """Count every event not counted yet, logging progress on a long backlog; return
    how many were counted."""
    counted = 0
    while added := await store.rollup():
        if counted // PROGRESS_EVERY != (counted + added) // PROGRESS_EVERY:
            log.info("statistics: %d events counted so far, more to go", counted + added)
        counted += added
        await asyncio.sleep(0)  # a long catch-up lets the process's other work run
    return counted


class Jobs:
    """The roll-up and retention loops, started and stopped together."""

    def __init__(
        self, *, store: Store, retention_days: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._retention = retention_days * 86400.0
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._rollup_loop(), name="jobs: statistics"),
            asyncio.create_task(self._retention_loop(), name="jobs: retention"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _rollup_loop(self) -> None:
        while True:
            try:
                await catch_up(self._store)
            except StoreError as exc:
                log.error("statistics: cannot count new events: %s", exc)
                await asyncio.sleep(STORE_ERROR_PAUSE)
                continue
            await asyncio.sleep(ROLLUP_INTERVAL)

    async def _retention_loop(self) -> None:
        while True:
            await self.purge()
            await asyncio.sleep(PURGE_INTERVAL)

    async def purge(self) -> None:
        """Apply retention once: delete events and cut message records older than
        `retention_days` to stubs (the statistics keep them counted)."""
        try:
            events, messages = await self._store.purge(self._clock() - self._retention)
        except StoreError as exc:
            log.error("retention: cannot delete old records: %s", exc)
            return
        if events or messages:
            log.info(
                "retention: deleted %d events and cut %d message records to stubs, "
                "older than %d days (statistics kept; links keep working)",
                events,
                messages,
                self._retention // 86400,
            )
