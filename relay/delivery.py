"""The seam between accepting a message and delivering it.

The handler builds a `Submission` for every accepted message and asks a `Delivery` for
the reply to give the client. `ForwardingDelivery` forwards while the client waits and
records what happened (Send, Delivery, Bounce, Rendering Failure); a spooling delivery
will take its place without the handler changing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pixelpost.bounces import classify
from pixelpost.config import ConfigSet
from pixelpost.errors import PermanentDeliveryError, TemporaryDeliveryError
from pixelpost.events import (
    Event,
    bounce_event,
    delivery_event,
    rendering_failure_event,
    send_event,
)
from pixelpost.store import MessageRecord, Recorder
from relay.upstream import Reply, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Client:
    """Who handed the message to the relay."""

    address: str
    helo: str | None
    user: str | None = None
    tls: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """One copy of a message, ready for the upstream."""

    message_id: str
    recipients: tuple[str, ...]
    content: bytes
    """As it goes upstream: control headers removed, tracking added, `Received:` on top."""
    mail: str
    """The SES `mail` object (JSON) every event of this copy carries."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    """A message the relay accepted: one or more copies to deliver."""

    mail_from: str
    mail_options: tuple[str, ...]
    copies: tuple[Outgoing, ...]
    config_set: ConfigSet | None
    client: Client
    received_at: datetime
    rendering_failure: str | None = None
    """Why tracking was left out, when it was."""

    @property
    def recipients(self) -> int:
        return sum(len(copy.recipients) for copy in self.copies)


class Delivery(Protocol):
    """Takes responsibility for a submission and says what to reply to the client."""

    async def submit(self, submission: Submission) -> str: ...


def _reply_text(text: str) -> str:
    # The upstream's text goes back to our client: keep it on one line.
    return " ".join(text.split())


@dataclass(kw_only=True, slots=True)
class _Outcome:
    """What happened to the copies of one submission."""

    deferred: list[str]
    refused: list[str]
    delivered: int
    events: list[Event]
    records: list[MessageRecord]


class ForwardingDelivery:
    """Forwards each copy upstream while the client waits, records its events, and
    turns the upstream's answer into the client's: 2xx -> 250, 4xx or no connection ->
    451, 5xx -> 554 with the upstream's text.

    A copy the upstream defers makes the whole message 451, so the client sends it
    again: a duplicate for the other copies beats a loss. A recipient it refuses for
    good while it takes the others gets a Bounce event; the client has a single reply
    for the whole message. The spool will replace this with retries and bounces of
    its own.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        recorder: Recorder,
        hostname: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transport = transport
        self._recorder = recorder
        self._hostname = hostname
        self._clock = clock

    async def submit(self, submission: Submission) -> str:
        outcome = _Outcome(deferred=[], refused=[], delivered=0, events=[], records=[])
        for copy in submission.copies:
            await self._forward(submission, copy, outcome)
        await self._recorder.record(messages=outcome.records, events=outcome.events)
        if outcome.deferred:
            return f"451 {outcome.deferred[0]}"
        if outcome.refused and not outcome.delivered:
            return f"554 {outcome.refused[0]}"
        return f"250 2.0.0 Ok: queued as {submission.copies[0].message_id}"

    async def _forward(self, submission: Submission, copy: Outgoing, outcome: _Outcome) -> None:
        started = time.monotonic()
        try:
            result = await self._transport.send(
                mail_from=submission.mail_from,
                rcpt_tos=copy.recipients,
                content=copy.content,
                mail_options=submission.mail_options,
            )
        except TemporaryDeliveryError as exc:
            log.warning("%s: upstream deferred: %s", copy.message_id, exc)
            outcome.deferred.append(
                _reply_text(exc.text)
                if exc.code // 100 == 4
                else f"4.4.1 upstream said: {exc.code} {_reply_text(exc.text)}"
            )
            return
        except PermanentDeliveryError as exc:
            log.warning("%s: upstream refused: %s", copy.message_id, exc)
            outcome.refused.append(_reply_text(exc.text))
            self._accepted(submission, copy, outcome)
            outcome.events.append(
                self._bounce(copy.message_id, copy.recipients, exc.code, exc.text)
            )
            return
        now = self._clock()
        self._accepted(submission, copy, outcome)
        refused_for_good = {r: reply for r, reply in result.refused.items() if reply.code >= 500}
        for rcpt, reply in result.refused.items():
            log.error("%s: upstream refused <%s>: %s", copy.message_id, rcpt, reply)
            if reply.code < 500:
                outcome.deferred.append(f"4.4.1 upstream deferred <{rcpt}>: {reply}")
        for rcpt, reply in refused_for_good.items():
            outcome.events.append(self._bounce(copy.message_id, (rcpt,), reply.code, reply.text))
        accepted = [r for r in copy.recipients if r not in result.refused]
        outcome.delivered += len(accepted)
        outcome.events.append(
            delivery_event(
                copy.message_id,
                recipients=accepted,
                smtp_response=str(result.reply),
                processing_ms=round((time.monotonic() - started) * 1000),
                reporting_mta=self._hostname,
                now=now,
            )
        )
        log.info(
            "%s: delivered from=<%s> to=%d via %s: %s",
            copy.message_id,
            submission.mail_from,
            len(accepted),
            self._transport.describe(),
            result.reply,
        )

    def _accepted(self, submission: Submission, copy: Outgoing, outcome: _Outcome) -> None:
        """The copy is the relay's now: its record, its Send (and Rendering Failure)."""
        now = self._clock()
        outcome.records.append(
            MessageRecord(
                id=copy.message_id,
                config_set=submission.config_set.name if submission.config_set else None,
                created_at=submission.received_at,
                mail=copy.mail,
            )
        )
        outcome.events.append(send_event(copy.message_id, now=now))
        if submission.rendering_failure is not None:
            outcome.events.append(
                rendering_failure_event(
                    copy.message_id, error=submission.rendering_failure, now=now
                )
            )

    def _bounce(self, message_id: str, recipients: tuple[str, ...], code: int, text: str) -> Event:
        kind = classify(code, text)
        diagnostic = f"smtp; {Reply(code=code, text=_reply_text(text))}"
        return bounce_event(
            message_id,
            bounce_type=kind.type,
            bounce_subtype=kind.subtype,
            recipients=[(rcpt, kind.status, diagnostic) for rcpt in recipients],
            reporting_mta=self._hostname,
            now=self._clock(),
        )
