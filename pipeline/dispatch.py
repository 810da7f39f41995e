"""The event pipeline: route new events into the outbox, and deliver the outbox to each
destination, at least once.

One task routes; each destination has its own task and its own requests in flight, so
a slow or dead endpoint never holds up another, nor the tracker's responses (it only
ever awaits I/O). A delivery is removed from the outbox only after it succeeded: a crash
in between sends it again once its claim lapses. Failures are retried on the
destination's schedule with jitter; when the schedule is spent the delivery becomes a
dead letter, which `pixelpost events replay` queues again. An endpoint answering 410
disables its destination until a replay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from pipeline.destinations import Outcome, Sender, make_senders
from pipeline.destinations.base import UNAVAILABLE_PAUSE
from pipeline.jobs import Jobs
from pixelpost.aio import wait_event
from pixelpost.config import Config
from pixelpost.core.event_types import EventType
from pixelpost.core.retry import next_delay
from pixelpost.logs import fields
from pixelpost.store import Claimed, Outbox, Route, StoreError, open_store

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
"""How often to look for work that another process put in the store."""
ROUTE_INTERVAL = 0.05
"""Routing waits this long after a round that routed less than a full batch, so that a
busy tracker routes its hits in batches rather than one transaction each; a backlog is
routed without waiting."""
ROUTE_BATCH = 500
"""Events routed in one round (one transaction)."""
ROUTE_POLL_INTERVAL = 0.25
"""How often to look for new events when nobody says there are (the dispatcher runs in
a process of its own, or events come from a relay elsewhere)."""
STORE_ERROR_PAUSE = 5.0
STOP_GRACE = 10.0


def routes_for(config: Config) -> list[Route]:
    """The routing table: each configuration set's events go to those of its
    destinations that subscribe to their type."""
    return [
        Route(config_set=config_set.name, event_type=event_type, destination=name)
        for config_set in config.config_sets.values()
        for name in config_set.destinations
        for event_type in EventType
        if event_type in config.destinations[name].events
    ]


class Dispatcher:
    """Routes events and delivers them to their destinations."""

    def __init__(
        self,
        *,
        config: Config,
        store: Outbox,
        senders: Mapping[str, Sender],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._routes = routes_for(config)
        self._store = store
        self._senders = senders
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._route_wakeup = asyncio.Event()
        self._wakeups = {name: asyncio.Event() for name in senders}
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._resume_at: dict[str, float] = {}
        """When each unavailable destination is claimed from again."""
        self._unavailable: dict[str, str] = {}
        """Why each unavailable destination is, as last heard."""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._route_loop(), name="dispatch: route"),
            # Other processes' events and deliveries, as far as the store tells of them.
            asyncio.create_task(
                self._store.listen(events=self.wake, deliveries=self.wake_destination),
                name="dispatch: listen",
            ),
        ]
        self._tasks += [
            asyncio.create_task(self._destination_loop(sender), name=f"dispatch: {name}")
            for name, sender in self._senders.items()
        ]

    def wake(self) -> None:
        """New events were recorded: route them now rather than at the next poll."""
        self._route_wakeup.set()

    def wake_destination(self, name: str) -> None:
        """Deliveries for `name` became due (every destination's, for ''): claim now."""
        for destination, wakeup in self._wakeups.items():
            if name in ("", destination):
                wakeup.set()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop claiming; give deliveries in flight `grace` seconds, then cancel them
        (their claims lapse and they are sent again later)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._deliveries:
            _, pending = await asyncio.wait(set(self._deliveries), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for sender in self._senders.values():
            try:
                await sender.close()
            except Exception:  # one sender's failure to close must not keep the rest open
                log.exception("dispatch %s: closing its connections failed", sender.name)

    async def _route_loop(self) -> None:
        while True:
            try:
                routed = await self._store.route(self._routes, limit=ROUTE_BATCH)
            except StoreError as exc:
                log.error("dispatch: cannot route events: %s", exc)
                await asyncio.sleep(STORE_ERROR_PAUSE)
                continue
            if routed:
                for wakeup in self._wakeups.values():
                    wakeup.set()
            if routed >= ROUTE_BATCH:
                await asyncio.sleep(0)  # a backlog: the next batch at once
                continue
            await asyncio.sleep(ROUTE_INTERVAL)
            if not routed:
                await wait_event(self._route_wakeup, ROUTE_POLL_INTERVAL)

    async def _destination_loop(self, sender: Sender) -> None:
        wakeup = self._wakeups[sender.name]
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._deliveries.discard(task)
            wakeup.set()

        while True:
            if (pause := self._resume_at.get(sender.name, 0.0) - self._clock()) > 0:
                await asyncio.sleep(pause)  # the destination is unavailable: no claims
                continue
            free = sender.concurrency - len(in_flight)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    claimed = await self._store.claim(
                        sender.name, limit=free * sender.batch_size, lease=sender.lease
                    )
                except StoreError as exc:
                    log.error("dispatch %s: cannot claim events: %s", sender.name, exc)
                    await asyncio.sleep(STORE_ERROR_PAUSE)
                    continue
            for start in range(0, len(claimed), sender.batch_size):
                task = asyncio.create_task(
                    self._deliver(sender, claimed[start : start + sender.batch_size])
                )
                in_flight.add(task)
                self._deliveries.add(task)
                task.add_done_callback(finished)
            if not claimed or len(in_flight) >= sender.concurrency:
                await wait_event(wakeup, POLL_INTERVAL)

    async def _deliver(self, sender: Sender, batch: Sequence[Claimed]) -> None:
        try:
            outcomes = await sender.deliver(batch)
        except Exception:  # a bug in a sender: the claims lapse and the events come back
            log.exception("dispatch %s: delivering %d events failed", sender.name, len(batch))
            return
        delivered = [
            c.seq for c, outcome in zip(batch, outcomes, strict=True) if outcome.delivered
        ]
        if delivered and self._unavailable.pop(sender.name, None) is not None:
            log.info("dispatch %s: available again; delivering its events", sender.name)
        try:
            if delivered:
                await self._store.delivered(sender.name, delivered)
            for claimed, outcome in zip(batch, outcomes, strict=True):
                if not outcome.delivered:
                    await self._failed(sender, claimed, outcome)
        except StoreError as exc:
            # The claims lapse and these deliveries come back: sent again, never lost.
            log.error("dispatch %s: cannot record delivery results: %s", sender.name, exc)

    async def _failed(self, sender: Sender, claimed: Claimed, outcome: Outcome) -> None:
        name = sender.name
        if outcome.unavailable:
            await self._wait_for(sender, claimed, outcome)
            return
        if outcome.gone:
            # An HTTP status is the endpoint's answer; anything else says what happened.
            said = outcome.error
            reason = (
                f"disabled: {'the endpoint answered ' if said.startswith('HTTP ') else ''}{said}"
            )
            newly = await self._store.disable(
                name, reason, seq=claimed.seq, attempts=claimed.attempts + 1
            )
            if newly:  # the other deliveries in flight hear the same answer
                log.error(
                    "dispatch %s: the endpoint is gone (%s); destination disabled, its events "
                    "are dead letters until `pixelpost events replay --destination %s`",
                    name,
                    outcome.error,
                    name,
                )
            return
        failures = claimed.attempts + 1
        delay = next_delay(
            failures, sender.retry_delays, retry_after=outcome.retry_after, rng=self._rng
        )
        if delay is None:
            log.error(
                "dispatch %s: event %s (%s of %s) failed %d times, last: %s; now a dead letter",
                name,
                claimed.event_id,
                claimed.event_type.value,
                claimed.message_id,
                failures,
                outcome.error,
                extra=fields(message_id=claimed.message_id),
            )
            await self._store.dead(name, claimed.seq, attempts=failures, error=outcome.error)
            return
        log.warning(
            "dispatch %s: event %s failed (attempt %d): %s; next attempt in %.0fs",
            name,
            claimed.event_id,
            failures,
            outcome.error,
            delay,
        )
        await self._store.retry(
            name, claimed.seq, attempts=failures, at=self._clock() + delay, error=outcome.error
        )

    async def _wait_for(self, sender: Sender, claimed: Claimed, outcome: Outcome) -> None:
        """The destination is unavailable: the event waits, its attempts uncounted (an
        outage makes no dead letters), and nothing is claimed for the destination until
        the sender's pause is over. Said once per outage, not once per event."""
        name = sender.name
        pause = outcome.retry_after if outcome.retry_after is not None else UNAVAILABLE_PAUSE
        at = self._clock() + pause
        self._resume_at[name] = max(self._resume_at.get(name, 0.0), at)
        if self._unavailable.get(name) != outcome.error:
            log.warning(
                "dispatch %s: unavailable: %s; its events wait in the outbox", name, outcome.error
            )
            self._unavailable[name] = outcome.error
        await self._store.retry(
            name, claimed.seq, attempts=claimed.attempts, at=at, error=outcome.error
        )


async def run_dispatcher(config: Config, stop: asyncio.Event) -> None:
    """Dispatch the configured store's events, and run the background jobs beside the
    dispatcher, until `stop` is set."""
    store = await open_store(config.store)
    try:
        async with aiohttp.ClientSession() as session:
            dispatcher = Dispatcher(
                config=config,
                store=store,
                senders=make_senders(config, session=session, store=store),
            )
            jobs = Jobs(store=store, retention_days=config.store.retention_days)
            dispatcher.start()
            jobs.start()
            try:
                await stop.wait()
            finally:
                await jobs.stop()
                await dispatcher.stop()
    finally:
        await store.close()
