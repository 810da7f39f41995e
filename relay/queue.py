"""Delivery from the spool: retries, bounces, notifications, and events.

`DeliveryQueue` keeps a schedule of the spool's messages and delivers those that are
due, a bounded number at a time, over the transport's pooled connections. For each
attempt and each recipient:

    (first attempt)                                      -> Send (and Rendering Failure)
    2xx                         delivered                -> Delivery event
    4xx, timeout, no connection deferred; retried on relay.retry_delays (the last one
                                repeats) until relay.max_queue_lifetime
                                                         -> DeliveryDelay, first time only
    5xx, or the lifetime spent  bounced                  -> Bounce event, and a DSN to the
                                                            sender (never for a DSN)

A timeout after the final dot is a deferral: the message may arrive twice, but never
not at all. Events are recorded before the spool file is removed, so a crash in
between sends the message again rather than losing its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pixelpost.aio import wait_event
from pixelpost.bounces import classify, enhanced_status
from pixelpost.config import RelayConfig
from pixelpost.config.values import format_duration
from pixelpost.errors import PermanentDeliveryError, TemporaryDeliveryError
from pixelpost.events import (
    Event,
    bounce_event,
    delivery_delay_event,
    delivery_event,
    rendering_failure_event,
    send_event,
)
from pixelpost.ids import new_message_id
from pixelpost.store import MessageRecord, Recorder, StoreError
from relay.data import LARGE_MESSAGE
from relay.dsn import Failure, notification
from relay.spool import Claim, CorruptSpoolFile, Envelope, Spool, SpoolError, State
from relay.upstream import RecipientsRefused, Transport

log = logging.getLogger(__name__)

CONCURRENCY_DEFAULT = 20
SCAN_INTERVAL = 2.0
"""How often to look for messages another relay process spooled, or left behind."""
RETRY_JITTER = 0.1
STOP_GRACE_DEFAULT = 30.0
LARGE_DELIVERIES_AT_ONCE = 4
"""Messages over 1 MB sent at once: the SMTP client copies a message twice as it
sends it (line endings, dot-stuffing)."""
FRESH_BYTES_LIMIT = 64 * 1024 * 1024
"""Newly spooled messages kept in memory for their first attempt, in bytes."""


def _delay_type(error: TemporaryDeliveryError) -> str:
    """SES's delayType for a deferral."""
    status = enhanced_status(error.code, error.text)
    if status.startswith("4.4.") or "cannot deliver to" in error.text:
        return "TransientCommunicationFailure"
    if status == "4.2.2":
        return "MailboxFull"
    return "General"


def next_attempt_at(
    *,
    attempts: int,
    delays: Sequence[float],
    now: float,
    expires_at: float,
    rng: random.Random,
) -> float:
    """When to try again after the `attempts`-th deferral: the matching delay (the last
    one repeats), give or take 10% so that a burst of deferrals does not come back as
    one, and never after the message expires (it is tried once more, then bounced)."""
    delay = delays[min(attempts, len(delays)) - 1]
    delay *= rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return min(now + delay, expires_at)


@dataclass(kw_only=True, slots=True)
class _Outcome:
    delivered: list[str] = field(default_factory=list)
    bounced: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: dict[str, TemporaryDeliveryError] = field(default_factory=dict)
    expired: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Deferred once more after relay.max_queue_lifetime: bounced too."""
    reply: str = ""

    @property
    def failed(self) -> dict[str, tuple[int, str]]:
        return self.bounced | self.expired


class DeliveryQueue:
    """Delivers the spool's messages."""

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        recorder: Recorder,
        relay: RelayConfig,
        concurrency: int = CONCURRENCY_DEFAULT,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._spool = spool
        self._transport = transport
        self._recorder = recorder
        self._relay = relay
        self._concurrency = concurrency
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._schedule: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task[float | None]] = {}
        self._fresh: dict[str, tuple[Envelope, bytes]] = {}
        self._large = asyncio.Semaphore(LARGE_DELIVERIES_AT_ONCE)
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

    async def _schedule_known(self, ids: Sequence[str]) -> None:
        def read_states() -> list[tuple[str, float]]:
            return [(i, self._spool.state(i).next_attempt_at) for i in ids]

        states = await self._spool.run(read_states)
        for message_id, due in states:
            self._at(message_id, due)

    def _at(self, message_id: str, due: float) -> None:
        if message_id in self._in_flight:
            return
        if self._scheduled.get(message_id, float("inf")) <= due:
            return
        self._scheduled[message_id] = due
        heapq.heappush(self._schedule, (due, message_id))
        self._wakeup.set()

    def add(self, messages: Sequence[tuple[Envelope, bytes]]) -> None:
        """Deliver newly spooled messages now. Their first attempt takes them from
        memory rather than from the spool, as long as that holds few enough bytes."""
        for envelope, content in messages:
            if envelope.id in self._in_flight:
                continue  # a scan found it first: it is being delivered from the spool
            if self._fresh_bytes + len(content) <= FRESH_BYTES_LIMIT:
                self._fresh[envelope.id] = (envelope, content)
                self._fresh_bytes += len(content)
            self._at(envelope.id, 0.0)

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
        known = self._fresh.pop(message_id, None)
        if known is not None:
            self._fresh_bytes -= len(known[1])
        if task.cancelled():
            again = None
        elif (error := task.exception()) is not None:
            # The spool could not be read or updated (a full disk, say): try again
            # later rather than at once, which the spool's state file may still say.
            log.error("%s: delivery attempt failed: %r; will try again", message_id, error)
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
                await self._schedule_known(unknown)
            except Exception:  # the scan must go on: it is how other relays' mail is found
                log.exception("spool %s: cannot scan", self._spool.path)

    async def _deliver(self, message_id: str) -> float | None:
        """One attempt at a spooled message; returns when to try it again, if ever."""
        spool = self._spool
        known = self._fresh.pop(message_id, None)
        if known is not None:
            self._fresh_bytes -= len(known[1])
        try:
            claim = await spool.run(spool.claim, message_id, known)
        except CorruptSpoolFile as exc:
            where = await spool.run(spool.quarantine, message_id)
            log.error("%s: damaged spool file moved to %s: %s", message_id, where, exc)
            return None
        if claim is None:
            return None  # delivered, or being delivered, by another process
        done: bool | None = None  # None: the attempt did not happen; leave the files
        try:
            if claim.state.next_attempt_at > self._clock() + 1:
                return claim.state.next_attempt_at  # another relay process deferred it
            again = await self._attempt(claim.envelope, claim.content, claim.state)
            done = again is None
            return again
        except Exception:  # a bug must not lose the message: it stays spooled
            log.exception("%s: delivery failed unexpectedly; will try again", message_id)
            done = False  # what the attempt did so far is saved, and it backs off
            return self._back_off(claim)
        finally:
            if done is None:
                claim.lock.release()
            else:
                # Shielded: once the upstream has it, a stop must not skip the removal.
                await asyncio.shield(spool.run(functools.partial(spool.finish, claim, done=done)))

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

    async def _attempt(self, envelope: Envelope, content: bytes, state: State) -> float | None:
        message_id = envelope.id
        todo = [r for r in envelope.recipients if r not in state.done]
        now = self._clock()
        outcome = await self._send(envelope, content, todo) if todo else _Outcome()
        if outcome.deferred and self._clock() >= envelope.expires_at:
            self._expire(outcome)
        events = self._events(envelope, state, outcome)
        if events and not envelope.notification:
            await self._record(envelope, events)
        state.sent = True
        if outcome.failed:
            await self._notify(envelope, content, outcome)
        state.done += outcome.delivered + list(outcome.failed)
        if outcome.deferred:
            state.attempts += 1
            state.last_error = str(next(iter(outcome.deferred.values())))
            if state.first_deferred_at is None:
                state.first_deferred_at = now
            state.next_attempt_at = next_attempt_at(
                attempts=state.attempts,
                delays=self._relay.retry_delays,
                now=self._clock(),
                expires_at=envelope.expires_at,
                rng=self._rng,
            )
            log.info(
                "%s: deferred %d recipients (attempt %d, next in %.0fs): %s",
                message_id,
                len(outcome.deferred),
                state.attempts,
                state.next_attempt_at - now,
                state.last_error,
            )
        if outcome.delivered:
            log.info(
                "%s: delivered to %d via %s: %s",
                message_id,
                len(outcome.delivered),
                self._transport.describe(),
                outcome.reply,
            )
        if outcome.failed:
            code, text = next(iter(outcome.failed.values()))
            log.info(
                "%s: bounced %d recipients: %d %s", message_id, len(outcome.failed), code, text
            )
        return state.next_attempt_at if outcome.deferred else None

    def _expire(self, outcome: _Outcome) -> None:
        lifetime = format_duration(self._relay.max_queue_lifetime)
        for rcpt, error in outcome.deferred.items():
            text = f"4.4.7 Delivery time expired after {lifetime}: {error.code} {error.text}"
            outcome.expired[rcpt] = (error.code, text)
        outcome.deferred.clear()

    async def _send(self, envelope: Envelope, content: bytes, todo: list[str]) -> _Outcome:
        outcome = _Outcome()
        large = len(content) > LARGE_MESSAGE
        try:
            async with self._large if large else contextlib.nullcontext():
                result = await self._transport.send(
                    mail_from=envelope.mail_from,
                    rcpt_tos=todo,
                    content=content,
                    mail_options=envelope.mail_options,
                )
        except TemporaryDeliveryError as exc:
            outcome.deferred = dict.fromkeys(todo, exc)
            return outcome
        except PermanentDeliveryError as exc:
            outcome.bounced = dict.fromkeys(todo, (exc.code, exc.text))
            return outcome
        except RecipientsRefused as exc:
            for rcpt in todo:
                reply = exc.refused.get(rcpt)
                if reply is not None and reply.code >= 500:
                    outcome.bounced[rcpt] = (reply.code, reply.text)
                else:
                    code, text = (reply.code, reply.text) if reply else (451, "4.3.0 refused")
                    outcome.deferred[rcpt] = TemporaryDeliveryError(code, text)
            return outcome
        outcome.reply = str(result.reply)
        for rcpt in todo:
            reply = result.refused.get(rcpt)
            if reply is None:
                outcome.delivered.append(rcpt)
            elif reply.code >= 500:
                outcome.bounced[rcpt] = (reply.code, reply.text)
            else:
                outcome.deferred[rcpt] = TemporaryDeliveryError(reply.code, reply.text)
        return outcome

    def _events(self, envelope: Envelope, state: State, outcome: _Outcome) -> list[Event]:
        now = datetime.now(UTC)
        hostname = self._relay.hostname
        events: list[Event] = []
        if not state.sent:
            events.append(send_event(envelope.id, now=now))
            if envelope.rendering_failure is not None:
                events.append(
                    rendering_failure_event(envelope.id, error=envelope.rendering_failure, now=now)
                )
        if outcome.delivered:
            events.append(
                delivery_event(
                    envelope.id,
                    recipients=outcome.delivered,
                    smtp_response=outcome.reply,
                    processing_ms=round((self._clock() - envelope.received_at) * 1000),
                    reporting_mta=hostname,
                    now=now,
                )
            )
        if outcome.bounced:
            code, text = next(iter(outcome.bounced.values()))
            kind = classify(code, text)
            events.append(self._bounce(envelope, kind.type, kind.subtype, outcome.bounced, now))
        if outcome.expired:
            events.append(self._bounce(envelope, "Transient", "General", outcome.expired, now))
        if outcome.deferred and state.first_deferred_at is None:
            first = next(iter(outcome.deferred.values()))
            events.append(
                delivery_delay_event(
                    envelope.id,
                    delay_type=_delay_type(first),
                    recipients=[
                        (rcpt, enhanced_status(e.code, e.text), f"smtp; {e.code} {e.text}")
                        for rcpt, e in outcome.deferred.items()
                    ],
                    expiration=datetime.fromtimestamp(envelope.expires_at, UTC),
                    reporting_mta=hostname,
                    now=now,
                )
            )
        return events

    def _bounce(
        self,
        envelope: Envelope,
        bounce_type: str,
        subtype: str,
        failed: dict[str, tuple[int, str]],
        now: datetime,
    ) -> Event:
        return bounce_event(
            envelope.id,
            bounce_type=bounce_type,
            bounce_subtype=subtype,
            recipients=[
                (r, enhanced_status(c, t), f"smtp; {c} {t}") for r, (c, t) in failed.items()
            ],
            reporting_mta=self._relay.hostname,
            now=now,
        )

    async def _record(self, envelope: Envelope, events: list[Event]) -> None:
        # The message's record goes along (it is ignored when the relay already wrote
        # it), so that delivery events are routed even if the record at accept time
        # was lost.
        records = []
        if envelope.mail is not None:
            records.append(
                MessageRecord(
                    id=envelope.id,
                    config_set=envelope.config_set,
                    created_at=datetime.fromtimestamp(envelope.received_at, UTC),
                    mail=envelope.mail,
                )
            )
        try:
            await self._recorder.record(messages=records, events=events)
        except StoreError as exc:
            log.error("%s: delivery events not recorded: %s", envelope.id, exc)
        except Exception:  # the upstream has the message: never send it again for this
            log.exception("%s: delivery events not recorded", envelope.id)

    async def _notify(self, envelope: Envelope, content: bytes, outcome: _Outcome) -> None:
        """Queue a delivery status notification to the sender, unless the message is one
        itself, has no sender to return to, or notifications are off."""
        relay = self._relay
        if envelope.notification or not envelope.mail_from or not relay.bounce_notifications:
            return
        hostname = self._relay.hostname
        try:
            report = notification(
                original=content,
                sender=envelope.mail_from,
                failures=[
                    Failure(recipient=r, status=enhanced_status(c, t), diagnostic=f"{c} {t}")
                    for r, (c, t) in outcome.failed.items()
                ],
                reporting_mta=hostname,
                arrival=datetime.fromtimestamp(envelope.received_at, UTC),
            )
        except Exception:  # the bounce stands (its event is recorded) without a report
            log.exception("%s: cannot write the bounce notification", envelope.id)
            return
        now = self._clock()
        dsn = Envelope(
            id=new_message_id(),
            mail_from="",
            recipients=(envelope.mail_from,),
            received_at=now,
            expires_at=now + self._relay.max_queue_lifetime,
            notification=True,
        )
        try:
            await self._spool.commit([(dsn, report)])
        except SpoolError as exc:
            log.error("%s: cannot queue the bounce notification: %s", envelope.id, exc)
            return
        log.info("%s: bounce notification %s for <%s>", envelope.id, dsn.id, envelope.mail_from)
        self.add([(dsn, report)])
