"""Mail that comes back, turned into events: a delivery status notification becomes the
Bounce of the copy it reports on, a feedback report its Complaint, as SES publishes them,
and the recipient goes on the suppression list when its set says so.

A report names its copy in one of two ways:

    the return path (VERP)    the envelope recipient `b-<token>@<return path domain>`,
                              signed: it names the copy and nobody can forge it
    the returned headers      the `Received:` field the relay put on each copy
                              (`by <host> (pixelpost) with ESMTP id <copy id>`), found in
                              the original's header section that the report returns

Auto-replies and mail that is no report are taken and recorded as nothing, counted by
what they were; so is a report whose copy the store does not know (purged, or never
pixelpost's), except a copy its signed return path names that may still be in flight:
that report is deferred (`NotRecordedYet`), since a copy's record is written only once
its delivery attempt is over, and a fast upstream bounces sooner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from pixelpost.config import Config
from pixelpost.core.events import Event, bounce_event, complaint_event
from pixelpost.core.ids import message_id_time
from pixelpost.core.reports import (
    AutoReply,
    DeliveryReport,
    FeedbackReport,
    NotAReport,
    RecipientStatus,
    Report,
    bounce_kind_of,
    read_report,
)
from pixelpost.core.suppression import BadEntry, Reason, Suppressed, normalize
from pixelpost.core.tokens import InvalidToken, TokenCodec
from pixelpost.errors import PixelpostError
from pixelpost.logs import fields
from pixelpost.store import MessageRecord, Recorder, SuppressionList

log = logging.getLogger(__name__)

INLINE_BYTES = 256 * 1024
"""Reports up to this size are read on the event loop; larger ones (a whole original
returned) on a thread, so that no other session waits for them."""
MAX_COPIES = 8
"""Copies one report may name through its returned headers (a message relayed by
several pixelposts names one each)."""
_COPY_ID = re.compile(rb"\(pixelpost\)\s+with\s+[A-Z0-9]{1,16}\s+id\s+([0-9a-f]{32})\b")
IN_FLIGHT_MARGIN = 3600.0
"""Seconds past relay.max_queue_lifetime during which a signed copy the store does not
know yet is taken for one still being sent, not for one purged."""
_UNSPAMMED = "not-spam"
"""The one feedback type that is no complaint about the mail."""


class NotRecordedYet(PixelpostError):
    """A report names (by its signed return path) a copy whose record the relay has not
    written yet: it is to be taken again later, not dropped."""


class Copies(Protocol):
    """Where the copies' records are looked up (`pixelpost.store.MessageLog`)."""

    async def message(self, message_id: str) -> MessageRecord | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What became of one returned message."""

    kind: str
    """bounce, complaint, delayed (a report of a delay or a delivery: no event),
    auto_reply, not_a_report, unmatched (no copy named), unknown_copy."""
    events: int = 0
    suppressed: int = 0


def return_path_copies(codec: TokenCodec, recipients: Sequence[str]) -> list[str]:
    """The copies that the envelope recipients name by their return path; recipients
    that are no return path (a feedback loop's address) name none."""
    found: list[str] = []
    for address in recipients:
        try:
            message_id = codec.read_return_address(address)
        except InvalidToken:
            continue
        if message_id not in found:
            found.append(message_id)
    return found


def header_copies(headers: bytes | None) -> list[str]:
    """The copies that a returned header section names by the relay's `Received:`."""
    found: list[str] = []
    for match in _COPY_ID.finditer(headers or b""):
        message_id = match.group(1).decode("ascii")
        if message_id not in found:
            found.append(message_id)
        if len(found) == MAX_COPIES:
            break
    return found


def _destination(record: MessageRecord) -> list[str]:
    """The copy's recipients, as its mail object names them (none in a stub)."""
    try:
        mail = json.loads(record.mail)
    except ValueError:
        return []
    destination = mail.get("destination") if isinstance(mail, dict) else None
    if not isinstance(destination, list):
        return []
    return [address for address in destination if isinstance(address, str)]


def _matching(destination: list[str], named: Sequence[str | None]) -> list[str]:
    """Those of the copy's recipients that a report names (any case)."""
    wanted = {name.lower() for name in named if name}
    return [address for address in destination if address.lower() in wanted]


def _arrival(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class Returns:
    """Reads returned mail and records what it says about the copies it names."""

    def __init__(
        self,
        *,
        config: Config,
        codec: TokenCodec,
        copies: Copies,
        recorder: Recorder,
        suppression: SuppressionList,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._codec = codec
        self._copies = copies
        self._recorder = recorder
        self._suppression = suppression
        self._clock = clock

    async def read(self, content: bytes) -> Report:
        if len(content) <= INLINE_BYTES:
            return read_report(content)
        return await asyncio.to_thread(read_report, content)

    async def process(self, *, recipients: Sequence[str], content: bytes, about: str) -> Outcome:
        """Record the events of one returned message sent to `recipients`; raises
        StoreError when the store cannot take them (the sender is told to retry).
        `about` names the message in the log."""
        report = await self.read(content)
        if isinstance(report, AutoReply | NotAReport):
            kind = "auto_reply" if isinstance(report, AutoReply) else "not_a_report"
            log.info("%s: %s (%s): nothing recorded", about, kind, report.reason)
            return Outcome(kind=kind)
        signed = return_path_copies(self._codec, recipients)
        named = signed or header_copies(report.original_headers)
        if not named:
            log.info("%s: a report that names no copy pixelpost sent", about)
            return Outcome(kind="unmatched")
        records = [r for message_id in named if (r := await self._copies.message(message_id))]
        now = self._clock()
        if not records and any(self._in_flight(message_id, now) for message_id in signed):
            # A copy's record is written once its attempt is over, and a fast upstream's
            # bounce can come back before that: the reporting server tries again later.
            raise NotRecordedYet(f"copies not recorded yet: {', '.join(signed)}")
        if not records:
            log.warning(
                "%s: a report on copies the store does not know: %s", about, ", ".join(named)
            )
            return Outcome(kind="unknown_copy")
        events: list[Event] = []
        entries: list[Suppressed] = []
        for record in records:
            if isinstance(report, DeliveryReport):
                made = self._bounce(record, report, now, entries)
            else:
                made = self._complaint(record, report, now, entries)
            events += made
        if not events:
            log.info("%s: a report of no failure (delayed or delivered)", about)
            return Outcome(kind="delayed")
        await self._recorder.record(events=events)
        if entries:
            await self._suppression.suppress(entries)
        kind = "bounce" if isinstance(report, DeliveryReport) else "complaint"
        for event in events:
            log.info(
                "%s: %s of %s recorded",
                about,
                kind,
                event.message_id,
                extra=fields(message_id=event.message_id),
            )
        return Outcome(kind=kind, events=len(events), suppressed=len(entries))

    def _in_flight(self, message_id: str, now: datetime) -> bool:
        """Whether the relay may still be sending (or recording) the copy."""
        age = now.timestamp() - message_id_time(message_id)
        return age < self._config.relay.max_queue_lifetime + IN_FLIGHT_MARGIN

    def _suppress_on(self, record: MessageRecord, what: str) -> bool:
        config_set = self._config.config_sets.get(record.config_set or "")
        return config_set is None or what in config_set.suppress_on

    def _bounce(
        self,
        record: MessageRecord,
        report: DeliveryReport,
        now: datetime,
        entries: list[Suppressed],
    ) -> list[Event]:
        """The copy's Bounce: one event for the failed recipients that the report names
        (its one recipient, for a copy of one), typed by the first of them."""
        failed = [r for r in report.recipients if r.action == "failed"]
        if not failed:
            return []
        destination = _destination(record)
        bounced: list[tuple[str, RecipientStatus]] = []
        for status in failed:
            if len(destination) == 1:
                address = destination[0]
            elif matched := _matching(destination, (status.address, status.original)):
                address = matched[0]
            elif not destination:
                address = status.address  # a stub: the report's word is all there is
            else:
                continue  # another copy's recipient
            if all(address != seen for seen, _ in bounced):
                bounced.append((address, status))
        if not bounced:
            return []
        first = bounced[0][1]
        kind = bounce_kind_of(report, first)
        if kind.type == "Permanent" and self._suppress_on(record, "bounce"):
            entries += self._entries(
                (address for address, _ in bounced), Reason.BOUNCE, record, now
            )
        return [
            bounce_event(
                record.id,
                bounce_type=kind.type,
                bounce_subtype=kind.subtype,
                recipients=[
                    (address, status.status, status.diagnostic or "")
                    for address, status in bounced
                ],
                reporting_mta=report.reporting_mta,
                remote_mta_ip=report.remote_mta_ip,
                now=now,
            )
        ]

    def _complaint(
        self,
        record: MessageRecord,
        report: FeedbackReport,
        now: datetime,
        entries: list[Suppressed],
    ) -> list[Event]:
        """The copy's Complaint, naming its recipient (all of them, when a copy of
        several is reported with its recipient left out, as SES does)."""
        destination = _destination(record)
        recipients = (
            _matching(destination, report.original_rcpt_to)
            or destination
            or list(report.original_rcpt_to)
        )
        if not recipients:
            return []
        if report.feedback_type != _UNSPAMMED and self._suppress_on(record, "complaint"):
            entries += self._entries(recipients, Reason.COMPLAINT, record, now)
        return [
            complaint_event(
                record.id,
                recipients=recipients,
                feedback_type=report.feedback_type,
                user_agent=report.user_agent,
                arrival_date=_arrival(report.arrival_date),
                now=now,
            )
        ]

    @staticmethod
    def _entries(
        addresses: Iterable[str], reason: Reason, record: MessageRecord, now: datetime
    ) -> list[Suppressed]:
        entries = []
        for address in addresses:
            try:
                normalized = normalize(address)
            except BadEntry as exc:
                log.warning("%s: not suppressed: %s", record.id, exc)
                continue
            entries.append(
                Suppressed(address=normalized, reason=reason, created_at=now, message_id=record.id)
            )
        return entries
