"""Starting the deliveries that are due, a bounded number at a time.

`DeliveryRunner.run` takes the messages due from the schedule (`relay.outbound.schedule`)
and starts a delivery (`relay.outbound.deliver`) at each, while fewer than
relay.concurrency are in flight; a delivery that finishes puts its message back on the
schedule at the time it returned. At stop, deliveries in flight get a grace period and
are then cancelled: their messages stay in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pixelpost.aio import wait_event
from pixelpost.config import RelayConfig
from pixelpost.logs import fields
from relay.outbound.deliver import Deliverer
from relay.outbound.fresh import FreshMessages
from relay.outbound.schedule import Schedule

# The delivery queue's logger: its lines keep the `logger` they always had.
log = logging.getLogger("relay.outbound.queue")

SCAN_INTERVAL = 2.0
"""How often to look for messages another relay process spooled, or left behind; an idle
runner looks at its schedule as often, whatever woke it or not."""


class DeliveryRunner:
    """Runs the schedule: which messages are waiting, which are in flight, and when a
    waiting one starts."""

    def __init__(
        self,
        *,
        deliverer: Deliverer,
        fresh: FreshMessages,
        relay: RelayConfig,
        clock: Callable[[], float],
    ) -> None:
        self._deliverer = deliverer
        self._fresh = fresh
        self._relay = relay
        self._concurrency = relay.concurrency
        self._clock = clock
        self._schedule = Schedule()
        self._in_flight: dict[str, asyncio.Task[float | None]] = {}
        self._wakeup = asyncio.Event()
        self._retrying = True

    @property
    def depth(self) -> int:
        """Messages waiting or in flight."""
        return len(self._schedule) + len(self._in_flight)

    def busy_with(self, message_id: str) -> bool:
        """Whether the message is being delivered right now."""
        return message_id in self._in_flight

    def knows(self, message_id: str) -> bool:
        """Whether the message is waiting or in flight."""
        return message_id in self._schedule or message_id in self._in_flight

    def at(self, message_id: str, due: float) -> None:
        """Try the message at `due`, or sooner if it is due sooner already; nothing for a
        message in flight (it is scheduled again when it finishes, if need be)."""
        if message_id in self._in_flight:
            return
        if self._schedule.at(message_id, due):
            self._wakeup.set()

    async def run(self) -> None:
        """Start what is due whenever there is room, until cancelled."""
        while True:
            now = self._clock()
            while len(self._in_flight) < self._concurrency:
                message_id = self._schedule.pop_due(now)
                if message_id is None:
                    break
                self._launch(message_id)
            next_due = self._schedule.next_due
            if len(self._in_flight) >= self._concurrency or next_due is None:
                wait = SCAN_INTERVAL
            else:
                wait = max(0.0, next_due - now)
            await wait_event(self._wakeup, wait)

    def _launch(self, message_id: str) -> None:
        task = asyncio.create_task(
            self._deliverer.deliver(message_id), name=f"deliver {message_id}"
        )
        self._in_flight[message_id] = task
        task.add_done_callback(lambda done: self._finished(message_id, done))

    def _finished(self, message_id: str, task: asyncio.Task[float | None]) -> None:
        del self._in_flight[message_id]
        self._fresh.take(message_id)  # held still only if cancelled before it began
        again = self._again(message_id, task)
        if again is not None and self._retrying:
            self.at(message_id, again)
        self._wakeup.set()

    def _again(self, message_id: str, task: asyncio.Task[float | None]) -> float | None:
        """When to try a message again whose delivery `task` is over, if ever."""
        if task.cancelled():
            return None
        if (error := task.exception()) is not None:
            # The spool could not be read or updated (a full disk, say): try again
            # later rather than at once, which the spool's state file may still say.
            log.error(
                "%s: delivery attempt failed: %r; will try again",
                message_id,
                error,
                extra=fields(message_id=message_id),
            )
            return self._clock() + self._relay.retry_delays[0]
        return task.result()

    def stop_retrying(self) -> None:
        """Put no delivery that finishes from now on back on the schedule: the queue is
        stopping, and the spool keeps what is left for the next start."""
        self._retrying = False

    async def drain(self, grace: float) -> None:
        """Give deliveries in flight `grace` seconds, then cancel them (their messages
        stay in the spool for the next start)."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(set(self._in_flight.values()), timeout=grace)
        if pending:
            log.warning("%d deliveries unfinished at stop stay spooled", len(pending))
        for unfinished in pending:
            unfinished.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
