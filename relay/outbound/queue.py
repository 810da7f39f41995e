"""Delivery from the spool: which message is tried when.

`DeliveryQueue` keeps a schedule of the spool's messages and starts an attempt
(`relay.outbound.attempt`) at each one that is due, a bounded number at a time, over the
transport's pooled connections. It picks up what other relay processes on the same
spool left or deferred, retries every deferred message on `pixelpost queue flush`, and
spools the delivery status notifications that attempts ask for. Events are recorded
before the spool file is removed, so a crash in between sends a copy again rather than
losing its events.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pixelpost.aio import wait_event
from pixelpost.config import RelayConfig
from pixelpost.core.bounces import enhanced_status
from pixelpost.core.dsn import Failure, notification
from pixelpost.core.ids import message_id_time, new_message_id
from pixelpost.core.retry import next_attempt_at
from pixelpost.core.rewrite import MessagePlan
from pixelpost.logs import fields
from pixelpost.store import Recorder
from relay.outbound.attempt import Attempt, Failed, Limits
from relay.outbound.spool import Claim, CorruptSpoolFile, Spool, SpoolError, State
from relay.outbound.spoolfile import Copy, Envelope
from relay.outbound.upstream import Transport
from relay.tracking import Rewriter

log = logging.getLogger(__name__)

SCAN_INTERVAL = 2.0
"""How often to look for messages another relay process spooled, or left behind."""
STOP_GRACE_DEFAULT = 30.0
LARGE_DELIVERIES_AT_ONCE = 4
"""Copies over 1 MB sent at once: the SMTP client copies a message twice as it sends
it (line endings, dot-stuffing)."""
NEW_MESSAGE_GRACE = 10.0
"""Seconds a scan leaves a message never tried yet to the process that accepted it (this
one still spooling it, or another relay process): that one delivers it from memory with
its tracking planned, where a scan would read it back and plan it again."""
FRESH_BYTES_LIMIT = 64 * 1024 * 1024
"""Newly spooled messages kept in memory for their first attempt, in bytes."""

_Fresh = tuple[Envelope, bytes, MessagePlan | None]


def _accepted_at(message_id: str) -> float:
    """When a spool file's message was accepted, by its name (0 for a name that is not a
    message id: try it now)."""
    try:
        return message_id_time(message_id)
    except ValueError:
        return 0.0


class DeliveryQueue:
    """Delivers the spool's messages."""

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        recorder: Recorder,
        rewriter: Rewriter,
        relay: RelayConfig,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._spool = spool
        self._transport = transport
        self._recorder = recorder
        self._rewriter = rewriter
        self._relay = relay
        self._concurrency = relay.concurrency
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._schedule: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task[float | None]] = {}
        self._fresh: dict[str, tuple[_Fresh, int]] = {}
        self._limits = Limits(
            concurrency=relay.concurrency,
            sends=asyncio.Semaphore(relay.concurrency),
            large=asyncio.Semaphore(LARGE_DELIVERIES_AT_ONCE),
        )
        self._fresh_bytes = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushed_at = 0.0
        self._stopping = False

    async def start(self) -> None:
        ids = await self._spool.run(self._spool.open)
        await self._schedule_known(ids)
        self._flushed_at = self._spool.flush_requested_at()
        self._tasks = [
            asyncio.create_task(self._run(), name="delivery queue"),
            asyncio.create_task(self._scan(), name="delivery queue scan"),
        ]
        if ids:
            log.info("spool %s: %d messages to deliver", self._spool.path, len(ids))

    async def _schedule_known(self, ids: Sequence[str], *, scanned: bool = False) -> None:
        def read_states() -> list[tuple[str, float]]:
            return [(i, self._spool.state(i).next_attempt_at) for i in ids]

        states = await self._spool.run(read_states)
        for message_id, next_attempt in states:
            new = scanned and not next_attempt
            self._at(
                message_id, _accepted_at(message_id) + NEW_MESSAGE_GRACE if new else next_attempt
            )

    def _at(self, message_id: str, due: float) -> None:
        if message_id in self._in_flight:
            return
        if self._scheduled.get(message_id, float("inf")) <= due:
            return
        self._scheduled[message_id] = due
        heapq.heappush(self._schedule, (due, message_id))
        self._wakeup.set()

    def add(self, envelope: Envelope, content: bytes, plan: MessagePlan | None = None) -> None:
        """Deliver a newly spooled message now. Its first attempt takes it (and its
        tracking plan) from memory rather than from the spool, as long as that holds
        few enough bytes."""
        if envelope.id in self._in_flight:
            return  # a scan found it first: it is being delivered from the spool
        size = len(content) * (2 if plan is not None else 1)  # a plan holds the HTML decoded
        if self._fresh_bytes + size <= FRESH_BYTES_LIMIT:
            self._fresh[envelope.id] = ((envelope, content, plan), size)
            self._fresh_bytes += size
        self._at(envelope.id, 0.0)

    def _take_fresh(self, message_id: str) -> _Fresh | None:
        found = self._fresh.pop(message_id, None)
        if found is None:
            return None
        self._fresh_bytes -= found[1]
        return found[0]

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def depth(self) -> int:
        return len(self._scheduled) + len(self._in_flight)

    async def stop(self, grace: float = STOP_GRACE_DEFAULT) -> None:
        """Start nothing new; give deliveries in flight `grace` seconds, then cancel them
        (their messages stay in the spool for the next start)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight.values()), timeout=grace)
            if pending:
                log.warning("%d deliveries unfinished at stop stay spooled", len(pending))
            for unfinished in pending:
                unfinished.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            now = self._clock()
            while (
                self._schedule
                and len(self._in_flight) < self._concurrency
                and self._schedule[0][0] <= now
            ):
                due, message_id = heapq.heappop(self._schedule)
                if self._scheduled.get(message_id) != due:
                    continue  # superseded by a later entry
                del self._scheduled[message_id]
                self._launch(message_id)
            if len(self._in_flight) >= self._concurrency or not self._schedule:
                wait = SCAN_INTERVAL
            else:
                wait = max(0.0, self._schedule[0][0] - now)
            await wait_event(self._wakeup, wait)

    def _launch(self, message_id: str) -> None:
        task = asyncio.create_task(self._deliver(message_id), name=f"deliver {message_id}")
        self._in_flight[message_id] = task
        task.add_done_callback(lambda done: self._finished(message_id, done))

    def _finished(self, message_id: str, task: asyncio.Task[float | None]) -> None:
        del self._in_flight[message_id]
        self._take_fresh(message_id)
        if task.cancelled():
            again = None
        elif (error := task.exception()) is not None:
            # The spool could not be read or updated (a full disk, say): try again
            # later rather than at once, which the spool's state file may still say.
            log.error(
                "%s: delivery attempt failed: %r; will try again",
                message_id,
                error,
                extra=fields(message_id=message_id),
            )
            again = self._clock() + self._relay.retry_delays[0]
        else:
            again = task.result()
        if again is not None and not self._stopping:
            self._at(message_id, again)
        self._wakeup.set()

    async def _scan(self) -> None:
        """Pick up what other relay processes spooled or left, and flush requests."""
        while True:
            await asyncio.sleep(SCAN_INTERVAL)
            try:
                flushed = self._spool.flush_requested_at()
                ids = await self._spool.run(self._spool.ids)
                if flushed > self._flushed_at:
                    self._flushed_at = flushed
                    log.info("spool %s: flush requested: retrying all now", self._spool.path)
                    for message_id in ids:
                        self._at(message_id, 0.0)
                unknown = [i for i in ids if i not in self._scheduled and i not in self._in_flight]
                await self._schedule_known(unknown, scanned=True)
            except Exception:  # the scan must go on: it is how other relays' mail is found
                log.exception("spool %s: cannot scan", self._spool.path)

    async def _deliver(self, message_id: str) -> float | None:
        """One attempt at a spooled message; returns when to try it again, if ever."""
        spool = self._spool
        fresh = self._take_fresh(message_id)
        known = (fresh[0], fresh[1]) if fresh is not None else None
        try:
            claim = await spool.run(spool.claim, message_id, known)
        except CorruptSpoolFile as exc:
            where = await spool.run(spool.quarantine, message_id)
            log.error(
                "%s: damaged spool file moved to %s: %s",
                message_id,
                where,
                exc,
                extra=fields(message_id=message_id),
            )
            return None
        if claim is None:
            return None  # delivered, or being delivered, by another process
        done: bool | None = None  # None: the attempt did not happen; leave the files
        try:
            if claim.state.next_attempt_at > self._clock() + 1:
                return claim.state.next_attempt_at  # another relay process deferred it
            again = await self._attempt(claim, fresh[2] if fresh is not None else None).run()
            done = again is None
            return again
        except Exception:  # a bug must not lose the message: it stays spooled
            log.exception(
                "%s: delivery failed unexpectedly; will try again",
                message_id,
                extra=fields(message_id=message_id),
            )
            done = False  # what the attempt did so far is saved, and it backs off
            return self._back_off(claim)
        finally:
            if done is None:
                claim.lock.release()
            else:
                # Shielded: once the upstream has it, a stop must not skip the removal.
                await asyncio.shield(spool.run(functools.partial(spool.finish, claim, done=done)))

    def _attempt(self, claim: Claim, plan: MessagePlan | None) -> Attempt:
        spool = self._spool

        async def save_state(state: State) -> None:
            await spool.run(spool.save_state, claim.envelope.id, state)

        return Attempt(
            envelope=claim.envelope,
            content=claim.content,
            state=claim.state,
            plan=plan,
            transport=self._transport,
            recorder=self._recorder,
            rewriter=self._rewriter,
            relay=self._relay,
            limits=self._limits,
            save_state=save_state,
            notify=self._notify,
            clock=self._clock,
            rng=self._rng,
        )

    def _back_off(self, claim: Claim) -> float:
        """When to try a message again whose attempt failed for want of a reply to
        count: on the retry schedule, and past its lifetime at the longest delay."""
        state = claim.state
        state.attempts += 1
        now = self._clock()
        delays = self._relay.retry_delays
        due = next_attempt_at(
            attempts=state.attempts,
            delays=delays,
            now=now,
            expires_at=claim.envelope.expires_at,
            rng=self._rng,
        )
        state.next_attempt_at = due if due > now else now + delays[-1]
        return state.next_attempt_at

    async def _notify(self, envelope: Envelope, content: bytes, failed: Failed) -> None:
        """Queue a delivery status notification to the sender, unless the message is one
        itself, has no sender to return to, or notifications are off."""
        relay = self._relay
        if envelope.notification or not envelope.mail_from or not relay.bounce_notifications:
            return
        about = fields(message_id=envelope.id)
        try:
            report = notification(
                original=content,
                sender=envelope.mail_from,
                failures=[
                    Failure(recipient=r, status=enhanced_status(c, t), diagnostic=f"{c} {t}")
                    for r, (c, t) in failed.items()
                ],
                reporting_mta=relay.hostname,
                arrival=datetime.fromtimestamp(envelope.received_at, UTC),
            )
        except Exception:  # the bounce stands (its event is recorded) without a report
            log.exception("%s: cannot write the bounce notification", envelope.id, extra=about)
            return
        now = self._clock()
        dsn_id = new_message_id()
        dsn = Envelope(
            id=dsn_id,
            mail_from="",
            copies=(Copy(id=dsn_id, recipients=(envelope.mail_from,)),),
            received_at=now,
            expires_at=now + relay.max_queue_lifetime,
            notification=True,
        )
        try:
            await self._spool.commit([(dsn, report)])
        except SpoolError as exc:
            log.error(
                "%s: cannot queue the bounce notification: %s", envelope.id, exc, extra=about
            )
            return
        log.info(
            "%s: bounce notification %s for <%s>",
            envelope.id,
            dsn.id,
            envelope.mail_from,
            extra=about,
        )
        self.add(dsn, report)
