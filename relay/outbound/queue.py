"""Delivery from the spool: which message is tried when.

`DeliveryQueue` keeps a schedule of the spool's messages and starts an attempt
(`relay.outbound.attempt`) at each one that is due, a bounded number at a time, over the
transport's pooled connections. It picks up what other relay processes on the same
spool left or deferred, retries every deferred message on `pixelpost queue flush`, and
spools the delivery status notifications that attempts ask for. Events are recorded
before the spool file is removed, so a crash in between sends a copy again rather than
losing its events.

`DeliveryQueue` is the entry point and puts together the parts, one job each:

    fresh.FreshMessages     newly spooled messages kept in memory for their first attempt
    schedule.Schedule       when each waiting message is due
    runner.DeliveryRunner     starts what is due, relay.concurrency at a time; reschedules
                            what finishes; lets deliveries in flight finish at stop
    deliver.Deliverer       one attempt at one message: claim, attempt, finish in the spool
    notify.BounceNotifier   spools and queues the notifications of bounces
    scan.SpoolScanner       what the spool held at start, and what other processes
                            spooled, left or asked to flush since
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from pixelpost.config import RelayConfig
from pixelpost.core.rewrite import MessagePlan
from pixelpost.store import Recorder, SuppressionList
from relay.outbound.deliver import Deliverer
from relay.outbound.fresh import FreshMessages
from relay.outbound.notify import BounceNotifier
from relay.outbound.runner import DeliveryRunner
from relay.outbound.scan import SpoolScanner
from relay.outbound.spool import Spool
from relay.outbound.spoolfile import Envelope
from relay.outbound.upstream import Transport
from relay.tracking import Rewriter

log = logging.getLogger(__name__)

STOP_GRACE_DEFAULT = 30.0


class DeliveryQueue:
    """Delivers the spool's messages."""

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        recorder: Recorder,
        suppression: SuppressionList,
        rewriter: Rewriter,
        relay: RelayConfig,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._spool = spool
        self._fresh = FreshMessages()
        notifier = BounceNotifier(spool=spool, relay=relay, clock=clock, enqueue=self.add)
        deliverer = Deliverer(
            spool=spool,
            transport=transport,
            recorder=recorder,
            suppression=suppression,
            rewriter=rewriter,
            relay=relay,
            fresh=self._fresh,
            notify=notifier.notify,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311 (jitter, not secrecy)
        )
        self._runner = DeliveryRunner(
            deliverer=deliverer, fresh=self._fresh, relay=relay, clock=clock
        )
        self._scanner = SpoolScanner(spool=spool, runner=self._runner)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        ids = await self._scanner.recover()
        self._tasks = [
            asyncio.create_task(self._runner.run(), name="delivery queue"),
            asyncio.create_task(self._scanner.run(), name="delivery queue scan"),
        ]
        if ids:
            log.info("spool %s: %d messages to deliver", self._spool.path, len(ids))

    def add(self, envelope: Envelope, content: bytes, plan: MessagePlan | None = None) -> None:
        """Deliver a newly spooled message now. Its first attempt takes it (and its
        tracking plan) from memory rather than from the spool, as long as that holds
        few enough bytes."""
        if self._runner.busy_with(envelope.id):
            return  # a scan found it first: it is being delivered from the spool
        self._fresh.keep(envelope, content, plan)
        self._runner.at(envelope.id, 0.0)

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def depth(self) -> int:
        return self._runner.depth

    async def stop(self, grace: float = STOP_GRACE_DEFAULT) -> None:
        """Start nothing new; give deliveries in flight `grace` seconds, then cancel them
        (their messages stay in the spool for the next start)."""
        self._runner.stop_retrying()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._runner.drain(grace)
