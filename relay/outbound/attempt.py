"""One delivery attempt at a spooled message: each copy still to go is rendered from the
stored original, sent, and accounted for, a few at a time.

For each copy and each of its recipients:

    (first attempt)                                      -> Send (and Rendering Failure)
    2xx                         delivered                -> Delivery event
    4xx, timeout, no connection deferred; retried on relay.retry_delays (the last one
                                repeats) until relay.max_queue_lifetime
                                                         -> DeliveryDelay, first time only
    5xx, or the lifetime spent  bounced                  -> Bounce event, and a DSN to the
                                                            sender (never for a DSN)

Copies go out in rounds of `ROUND_COPIES`; after each round its events are recorded,
its bounces notified and the spool's state saved, so that a crash in the middle of a
large message sends again at most one round. A timeout after the final dot is a
deferral: a copy may arrive twice, but never not at all.

While the store cannot be read (a PostgreSQL server down or out of reach), nothing is
sent: the suppression list must be read first. The message waits in the spool and is
tried again every `STORE_WAIT` seconds, without counting as an attempt or making a
DeliveryDelay. Events of copies sent just as the store went away are given to it again
for up to `RECORD_PATIENCE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pixelpost.config import RelayConfig
from pixelpost.core.bounces import bounce_kind, enhanced_status
from pixelpost.core.events import (
    Event,
    bounce_event,
    delivery_delay_event,
    delivery_event,
    dumps,
    rendering_failure_event,
    send_event,
)
from pixelpost.core.mail import for_copy
from pixelpost.core.retry import next_attempt_at
from pixelpost.core.rewrite import MessagePlan
from pixelpost.core.suppression import DIAGNOSTIC as SUPPRESSED_DIAGNOSTIC
from pixelpost.core.values import format_duration
from pixelpost.errors import PermanentDeliveryError, TemporaryDeliveryError
from pixelpost.logs import LogEvery, fields
from pixelpost.store import MessageRecord, Recorder, StoreError, SuppressionList
from relay.frontdoor.data import LARGE_MESSAGE
from relay.outbound.spool import State
from relay.outbound.spoolfile import Copy, Envelope
from relay.outbound.upstream import Payload, RecipientsRefused, Transport
from relay.tracking import Rewriter

log = logging.getLogger(__name__)
_waiting_logged = LogEvery(10.0)

STORE_WAIT = 10.0
"""Seconds before a message that waits for the store is tried again (with jitter)."""
RECORD_PATIENCE = 120.0
"""Seconds a sent copy's events are retried for while the store refuses them."""
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Seconds between those retries; the last one repeats."""
ROUND_COPIES = 100
"""Copies sent between two checkpoints of a message's state."""
SUPPRESSED_STATUS = "5.7.1"
"""The status of a Bounce for a suppressed recipient: refused by policy (RFC 3463)."""

Failed = dict[str, tuple[int, str]]
Notify = Callable[[Envelope, bytes, Failed], Awaitable[None]]


def _delay_type(error: TemporaryDeliveryError) -> str:
    """SES's delayType for a deferral."""
    status = enhanced_status(error.code, error.text)
    if status.startswith("4.4.") or "cannot deliver to" in error.text:
        return "TransientCommunicationFailure"
    if status == "4.2.2":
        return "MailboxFull"
    return "General"


@dataclass(kw_only=True, slots=True)
class Outcome:
    """What became of one copy's recipients in this attempt."""

    copy: Copy
    delivered: list[str] = field(default_factory=list)
    bounced: Failed = field(default_factory=dict)
    deferred: dict[str, TemporaryDeliveryError] = field(default_factory=dict)
    expired: Failed = field(default_factory=dict)
    """Deferred once more after relay.max_queue_lifetime: bounced too."""
    suppressed: list[str] = field(default_factory=list)
    """On the suppression list: not sent to."""
    reply: str = ""
    rendering_failure: str | None = None
    """Why this copy went out untracked although its message is tracked."""

    @property
    def failed(self) -> Failed:
        return self.bounced | self.expired


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What attempts share: SMTP transactions at once (relay.concurrency), and large
    copies at once (an SMTP client copies a message twice as it sends it)."""

    concurrency: int
    sends: asyncio.Semaphore
    large: asyncio.Semaphore


class Attempt:
    """One attempt at one spooled message."""

    def __init__(
        self,
        *,
        envelope: Envelope,
        content: bytes,
        state: State,
        plan: MessagePlan | None,
        transport: Transport,
        recorder: Recorder,
        suppression: SuppressionList,
        rewriter: Rewriter,
        relay: RelayConfig,
        limits: Limits,
        save_state: Callable[[State], Awaitable[None]],
        notify: Notify,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._envelope = envelope
        self._content = content
        self._state = state
        self._plan = plan
        self._transport = transport
        self._recorder = recorder
        self._suppression = suppression
        self._suppressed: frozenset[str] = frozenset()
        """The recipients still to go that are on the suppression list (lowercased)."""
        self._rewriter = rewriter
        self._relay = relay
        self._limits = limits
        self._save_state = save_state
        self._notify = notify
        self._clock = clock
        self._rng = rng
        self._first = not state.sent
        self._deferred: dict[str, TemporaryDeliveryError] = {}
        self._template: dict[str, object] | None = None
        """The mail object of a message with several copies, each copy's made from it."""
        self._replan_failure: str | None = None

    async def run(self) -> float | None:
        """Deliver what is left; returns when to try again, or None when every recipient
        is delivered or bounced."""
        envelope, state = self._envelope, self._state
        started = self._clock()
        done = set(state.done)
        todo = [(copy, [r for r in copy.recipients if r not in done]) for copy in envelope.copies]
        todo = [(copy, recipients) for copy, recipients in todo if recipients]
        if todo and not envelope.notification:
            try:
                self._suppressed = await self._look_up([r for _, rs in todo for r in rs])
            except StoreError as exc:
                return self._wait_for_store(exc)
        if todo and envelope.tracking is not None and self._plan is None:
            decision = await self._rewriter.replan(envelope, self._content)
            self._plan, self._replan_failure = decision.plan, decision.failure
        if envelope.mail is not None and len(envelope.copies) > 1:
            self._template = json.loads(envelope.mail)
        for start in range(0, len(todo), ROUND_COPIES):
            await self._round(todo[start : start + ROUND_COPIES])
            if start + ROUND_COPIES < len(todo):
                await self._save_state(state)  # a checkpoint: a crash resends one round
        state.sent = True
        if not self._deferred:
            return None
        state.attempts += 1
        state.last_error = str(next(iter(self._deferred.values())))
        if state.first_deferred_at is None:
            state.first_deferred_at = started
        state.next_attempt_at = next_attempt_at(
            attempts=state.attempts,
            delays=self._relay.retry_delays,
            now=self._clock(),
            expires_at=envelope.expires_at,
            rng=self._rng,
        )
        log.info(
            "%s: deferred %d recipients (attempt %d, next in %.0fs): %s",
            envelope.id,
            len(self._deferred),
            state.attempts,
            state.next_attempt_at - started,
            state.last_error,
            extra=fields(message_id=envelope.id),
        )
        return state.next_attempt_at

    async def _round(self, todo: Sequence[tuple[Copy, list[str]]]) -> None:
        """Send `todo`'s copies side by side, then account for them. A stop in the middle
        still accounts for the copies the upstream has taken."""
        finished: list[Outcome] = []
        pending = iter(todo)

        async def worker() -> None:
            for copy, recipients in pending:
                finished.append(await self._copy(copy, recipients))

        count = min(len(todo), self._limits.concurrency)
        # One copy (most mail) is sent here; more, by workers side by side.
        workers = [asyncio.ensure_future(worker()) for _ in range(count)] if count > 1 else []
        try:
            await (asyncio.gather(*workers) if workers else worker())
        finally:
            for task in workers:
                task.cancel()
            await asyncio.shield(self._account(finished))

    async def _look_up(self, recipients: list[str]) -> frozenset[str]:
        """Those of `recipients` on the suppression list, lowercased as it keys them:
        the account's, or the message's configuration set's (its unsubscribes). Raises
        StoreError when the list cannot be read."""
        return await self._suppression.suppressed(
            [r.lower() for r in recipients], self._envelope.config_set
        )

    def _wait_for_store(self, exc: StoreError) -> float:
        """The store cannot be read: send nothing, and try again soon (not an attempt:
        the upstream was not asked)."""
        state = self._state
        state.next_attempt_at = self._clock() + STORE_WAIT * (0.5 + self._rng.random())
        if (more := _waiting_logged.due()) is not None:
            log.error(
                "%s: waits in the spool: the suppression list cannot be read: %s%s",
                self._envelope.id,
                exc,
                more,
                extra=fields(message_id=self._envelope.id),
            )
        return state.next_attempt_at

    async def _copy(self, copy: Copy, recipients: list[str]) -> Outcome:
        if self._suppressed:
            suppressed = [r for r in recipients if r.lower() in self._suppressed]
            if suppressed:
                recipients = [r for r in recipients if r.lower() not in self._suppressed]
                outcome = (
                    await self._send_copy(copy, recipients) if recipients else Outcome(copy=copy)
                )
                outcome.suppressed = suppressed
                return outcome
        return await self._send_copy(copy, recipients)

    async def _send_copy(self, copy: Copy, recipients: list[str]) -> Outcome:
        large = len(self._content) > LARGE_MESSAGE
        async with (
            self._limits.sends,
            self._limits.large if large else contextlib.nullcontext(),
        ):
            payload, failure = await self._rewriter.render(
                self._envelope, self._content, copy, self._plan, self._transport.prepare
            )
            outcome = await self._send(copy, payload, recipients)
        outcome.rendering_failure = failure
        if outcome.deferred and self._clock() >= self._envelope.expires_at:
            self._expire(outcome)
        return outcome

    async def _send(self, copy: Copy, payload: Payload, todo: list[str]) -> Outcome:
        outcome = Outcome(copy=copy)
        try:
            result = await self._transport.send(
                mail_from=self._rewriter.return_path(self._envelope, copy),
                rcpt_tos=todo,
                payload=payload,
                mail_options=self._envelope.mail_options,
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

    def _expire(self, outcome: Outcome) -> None:
        lifetime = format_duration(self._relay.max_queue_lifetime)
        for rcpt, error in outcome.deferred.items():
            text = f"4.4.7 Delivery time expired after {lifetime}: {error.code} {error.text}"
            outcome.expired[rcpt] = (error.code, text)
        outcome.deferred.clear()

    async def _account(self, outcomes: list[Outcome]) -> None:
        """Record the events of `outcomes`, notify their bounces, mark them done."""
        if not outcomes:
            return
        envelope = self._envelope
        if not envelope.notification:
            events = [event for outcome in outcomes for event in self._events(outcome)]
            await self._record(outcomes, events)
        failed: Failed = {}
        for outcome in outcomes:
            failed |= outcome.failed
            self._deferred |= outcome.deferred
            self._state.done += outcome.delivered + list(outcome.failed) + outcome.suppressed
            self._log(outcome)
        if failed:
            await self._notify(envelope, self._content, failed)

    def _log(self, outcome: Outcome) -> None:
        copy_id = outcome.copy.id
        if outcome.suppressed:
            log.info(
                "%s: not sent to %d recipients on the suppression list",
                copy_id,
                len(outcome.suppressed),
                extra=fields(message_id=copy_id),
            )
        if outcome.delivered:
            log.info(
                "%s: delivered to %d via %s: %s",
                copy_id,
                len(outcome.delivered),
                self._transport.describe(),
                outcome.reply,
                extra=fields(message_id=copy_id),
            )
        if outcome.failed:
            code, text = next(iter(outcome.failed.values()))
            log.info(
                "%s: bounced %d recipients: %d %s",
                copy_id,
                len(outcome.failed),
                code,
                text,
                extra=fields(message_id=copy_id),
            )

    def _events(self, outcome: Outcome) -> list[Event]:
        envelope, copy = self._envelope, outcome.copy
        now = datetime.now(UTC)
        hostname = self._relay.hostname
        events: list[Event] = []
        if self._first:
            events.append(send_event(copy.id, now=now))
            failure = envelope.rendering_failure or self._replan_failure
            if failure is not None:
                events.append(rendering_failure_event(copy.id, error=failure, now=now))
        if outcome.rendering_failure is not None:
            events.append(
                rendering_failure_event(copy.id, error=outcome.rendering_failure, now=now)
            )
        if outcome.delivered:
            events.append(
                delivery_event(
                    copy.id,
                    recipients=outcome.delivered,
                    smtp_response=outcome.reply,
                    processing_ms=round((self._clock() - envelope.received_at) * 1000),
                    reporting_mta=hostname,
                    now=now,
                )
            )
        if outcome.bounced:
            code, text = next(iter(outcome.bounced.values()))
            kind = bounce_kind(code, text)
            events.append(self._bounce(copy, kind.type, kind.subtype, outcome.bounced, now))
        if outcome.expired:
            events.append(self._bounce(copy, "Transient", "General", outcome.expired, now))
        if outcome.suppressed:
            events.append(
                bounce_event(
                    copy.id,
                    bounce_type="Permanent",
                    bounce_subtype="OnAccountSuppressionList",
                    recipients=[
                        (r, SUPPRESSED_STATUS, SUPPRESSED_DIAGNOSTIC) for r in outcome.suppressed
                    ],
                    reporting_mta=hostname,
                    now=now,
                )
            )
        if outcome.deferred and self._state.first_deferred_at is None:
            first = next(iter(outcome.deferred.values()))
            events.append(
                delivery_delay_event(
                    copy.id,
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
        self, copy: Copy, bounce_type: str, subtype: str, failed: Failed, now: datetime
    ) -> Event:
        return bounce_event(
            copy.id,
            bounce_type=bounce_type,
            bounce_subtype=subtype,
            recipients=[
                (r, enhanced_status(c, t), f"smtp; {c} {t}") for r, (c, t) in failed.items()
            ],
            reporting_mta=self._relay.hostname,
            now=now,
        )

    async def _record(self, outcomes: Sequence[Outcome], events: list[Event]) -> None:
        # The copies' records go along (ignored when already written), so that their
        # events are routed whatever happened before.
        records = []
        envelope, template = self._envelope, self._template
        if envelope.mail is not None:
            created_at = datetime.fromtimestamp(envelope.received_at, UTC)
            for outcome in outcomes:
                copy = outcome.copy
                mail = envelope.mail  # a message of one copy keeps its copy's whole
                if template is not None:
                    mail = dumps(
                        for_copy(template, message_id=copy.id, destination=copy.recipients)
                    )
                records.append(
                    MessageRecord(
                        id=copy.id,
                        config_set=envelope.config_set,
                        created_at=created_at,
                        mail=mail,
                    )
                )
        about = fields(message_id=envelope.id)
        give_up_at = self._clock() + RECORD_PATIENCE
        for retry in range(1_000_000):
            try:
                await self._recorder.record(messages=records, events=events)
            except StoreError as exc:
                if self._clock() >= give_up_at:
                    log.error(
                        "%s: delivery events not recorded after %.0fs: %s",
                        envelope.id,
                        RECORD_PATIENCE,
                        exc,
                        extra=about,
                    )
                    return
                if retry == 0:
                    log.warning(
                        "%s: delivery events not recorded yet, trying again: %s",
                        envelope.id,
                        exc,
                        extra=about,
                    )
                await asyncio.sleep(RECORD_RETRY_DELAYS[min(retry, len(RECORD_RETRY_DELAYS) - 1)])
            except Exception:  # the upstream has the message: never send it again for this
                log.exception("%s: delivery events not recorded", envelope.id, extra=about)
                return
            else:
                return
