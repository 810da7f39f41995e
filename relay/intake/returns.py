"""Mail that comes back, turned into events: a delivery status notification becomes the
Bounce of the copy it reports on, a feedback report its Complaint, as SES publishes them,
and the recipient goes on the suppression list when its set says so.

A report names its copy in one of two ways:

    the return path (VERP)    the envelope recipient `b-<token>@<return path domain>`,
                              signed: it names the copy and nobody can forge it
    the returned headers      the `Received:` field the relay put on each copy
                              (`by <host> (pixelpost) with ESMTP id <copy id>`), found in
                              the original's header section that the report returns

Only the signed return path is proof. A report found by its headers could be written by
anyone who saw the copy, so it suppresses only the recipient of a copy of one (who alone
saw that copy id), and a DSN is taken that way only for a copy without a return path.
Addresses come from the copy's record, never from the report: a copy past retention,
whose record no longer names them, gets no event.

Auto-replies and mail that is no report are taken and recorded as nothing, counted by
what they were (unreadable mail from the null sender to a copy's return path is an
Undetermined bounce); so is a report whose copy the store does not know (purged, or
never pixelpost's), except a copy its signed return path names that may still be in
flight: that report is deferred (`NotRecordedYet`), since a copy's record is written
only once its delivery attempt is over, and a fast upstream bounces sooner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from pixelpost.config import Config
from pixelpost.core.events import Event, SubscriptionSource, bounce_event, complaint_event
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
from pixelpost.core.subscription import Subscriber, unsubscribed
from pixelpost.core.suppression import BadEntry, Reason, Suppressed, normalize
from pixelpost.core.tokens import InvalidToken, TokenCodec
from pixelpost.errors import PixelpostError
from pixelpost.logs import fields
from pixelpost.store import MessageRecord, Recorder, StoreError, SuppressionList

log = logging.getLogger(__name__)

INLINE_BYTES = 16 * 1024
"""Reports up to this size (a DSN that returns headers only) are read on the event loop;
larger ones on a thread of their own, so that no other session waits for them."""
READERS_WAITING = 8
"""Large reports read or waiting for the reader at once; more wait to be let in."""
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
    """bounce, complaint, unsubscribe, no_failure (a report of a delay or a delivery, or one that a
    copy's return path should have had: no event), auto_reply, not_a_report, unmatched
    (no copy named), unknown_copy, past_retention (its copy's record is a stub)."""
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


@dataclass(frozen=True, kw_only=True, slots=True)
class _Copy:
    """A copy a report names, as the store knows it."""

    record: MessageRecord
    destination: list[str]
    """Its recipients; none once retention has cut its record to a stub."""
    signed: bool
    """Named by its signed return path, not by headers anyone could copy."""


class Returns:
    """Reads returned mail and records what it says about the copies it names."""

    def __init__(
        self,
        *,
        config: Config,
        codec: TokenCodec,
        copies: Copies,
        recorder: Recorder,
        subscriptions: SuppressionList | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._codec = codec
        self._copies = copies
        self._recorder = recorder
        self._subscriptions = subscriptions
        self._clock = clock
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="reports")
        self._reading = asyncio.Semaphore(READERS_WAITING)

    async def read(self, content: bytes) -> Report:
        if len(content) <= INLINE_BYTES:
            return read_report(content)
        async with self._reading:  # one at a time: a flood waits, the loop does not
            return await asyncio.get_running_loop().run_in_executor(
                self._reader, read_report, content
            )

    def close(self) -> None:
        self._reader.shutdown(wait=True)

    def addressed_to_intake(self, recipients: Sequence[str]) -> bool:
        """Whether mail to `recipients` goes to the intake (a return-path domain's)."""
        domains = self._config.return_path_domains()
        return any(r.rpartition("@")[2].lower().rstrip(".") in domains for r in recipients)

    async def process(
        self, *, recipients: Sequence[str], content: bytes, about: str, sender: str | None = None
    ) -> Outcome:
        """Record the events of one returned message from `sender` ("" for the null
        reverse path) to `recipients`; raises StoreError when the store cannot take
        them, NotRecordedYet for a report that came too soon (the sender is told to
        retry). `about` names the message in the log."""
        report = await self.read(content)
        if isinstance(report, AutoReply):
            log.info("%s: auto_reply (%s): nothing recorded", about, report.reason)
            return Outcome(kind="auto_reply")
        signed = return_path_copies(self._codec, recipients)
        if isinstance(report, NotAReport) and not (signed and sender == ""):
            log.info("%s: not_a_report (%s): nothing recorded", about, report.reason)
            return Outcome(kind="not_a_report")
        # From the null reverse path to a copy's own return path, unreadable: a bounce of
        # a kind nobody can tell (SES's Undetermined), named by the signed return path.
        named = signed or (
            header_copies(report.original_headers) if not isinstance(report, NotAReport) else []
        )
        if not named:
            log.info("%s: a report that names no copy pixelpost sent", about)
            return Outcome(kind="unmatched")
        now = self._clock()
        records = await self._records(named, signed, now, about)
        if not records:
            return Outcome(kind="unknown_copy")
        entries: list[Suppressed] = []
        events, stubs = self._events(report, records, bool(signed), now, entries)
        if not events:
            kind = "past_retention" if stubs == len(records) else "no_failure"
            log.info("%s: %s: nothing recorded (copies %s)", about, kind, ", ".join(named))
            return Outcome(kind=kind)
        # One commit: a report is taken whole or not at all (and then sent again).
        await self._recorder.record(events=events, suppressions=entries)
        kind = "complaint" if isinstance(report, FeedbackReport) else "bounce"
        for event in events:
            log.info(
                "%s: %s of %s recorded",
                about,
                kind,
                event.message_id,
                extra=fields(message_id=event.message_id),
            )
        return Outcome(kind=kind, events=len(events), suppressed=len(entries))

    def unsubscribe_copies(self, recipients: Sequence[str]) -> list[str]:
        """The copies whose unsubscribe `mailto:` addresses are among `recipients`."""
        found: list[str] = []
        for address in recipients:
            try:
                message_id = self._codec.read_unsubscribe_address(address)
            except InvalidToken:
                continue
            if message_id not in found:
                found.append(message_id)
        return found

    async def unsubscribe(
        self, *, copies: Sequence[str], content: bytes, about: str, sender: str
    ) -> Outcome:
        """Take mail to the unsubscribe addresses of `copies`: each copy's recipient is
        unsubscribed in its set's scope (the address from the copy's record, never from
        the mail). What no person sends there (a bounce, an auto-reply) changes nothing.
        Raises StoreError and NotRecordedYet as `process` does."""
        if sender == "":
            log.info("%s: unsubscribe address: a notification, nothing recorded", about)
            return Outcome(kind="not_a_report")
        report = await self.read(content)
        if isinstance(report, AutoReply | DeliveryReport):
            log.info("%s: unsubscribe address: an automatic reply, nothing recorded", about)
            return Outcome(kind="auto_reply")
        now = self._clock()
        records = await self._records(list(copies), list(copies), now, about)
        if not records:
            return Outcome(kind="unknown_copy")
        changed = 0
        for record in records:
            destination = _destination(record)
            if len(destination) != 1 or record.config_set is None:
                log.info(
                    "%s: unsubscribe of %s past retention: nothing recorded",
                    about,
                    record.id,
                    extra=fields(message_id=record.id),
                )
                continue
            changed += await self._unsubscribe(record, destination[0], now, about)
        return Outcome(kind="unsubscribe", events=changed, suppressed=changed)

    async def _unsubscribe(
        self, record: MessageRecord, address: str, now: datetime, about: str
    ) -> int:
        assert record.config_set is not None
        config_set = self._config.config_sets.get(record.config_set)
        subscriber = Subscriber(
            message_id=record.id,
            address=address,
            config_set=record.config_set,
            account=config_set is not None and config_set.unsubscribe_scope == "account",
        )
        try:
            entry, event = unsubscribed(subscriber, source=SubscriptionSource.MAILTO, now=now)
        except BadEntry:
            return 0  # an address the list cannot hold was never sent to
        if self._subscriptions is None:
            raise StoreError("unsubscribes cannot be recorded: no suppression list")
        if not await self._subscriptions.unsubscribe(entry, event):
            log.info(
                "%s: unsubscribe of %s: unsubscribed already",
                about,
                record.id,
                extra=fields(message_id=record.id),
            )
            return 0
        log.info(
            "%s: unsubscribe of %s recorded",
            about,
            record.id,
            extra=fields(message_id=record.id),
        )
        return 1

    async def _records(
        self, named: list[str], signed: list[str], now: datetime, about: str
    ) -> list[MessageRecord]:
        """The records of the copies named that the store knows; NotRecordedYet when
        none is known yet but a signed one may still be in flight."""
        records = [r for message_id in named if (r := await self._copies.message(message_id))]
        if not records and any(self._in_flight(message_id, now) for message_id in signed):
            # A copy's record is written once its attempt is over, and a fast upstream's
            # bounce can come back before that: the reporting server tries again later.
            raise NotRecordedYet(f"copies not recorded yet: {', '.join(signed)}")
        if not records:
            log.warning(
                "%s: a report on copies the store does not know: %s", about, ", ".join(named)
            )
        return records

    def _events(
        self,
        report: Report,
        records: list[MessageRecord],
        signed: bool,
        now: datetime,
        entries: list[Suppressed],
    ) -> tuple[list[Event], int]:
        """The events of `report` on each copy, and how many copies were stubs."""
        events: list[Event] = []
        stubs = 0
        for record in records:
            copy = _Copy(record=record, destination=_destination(record), signed=signed)
            if not copy.destination:
                stubs += 1  # past retention: whom it went to is no longer known
            elif isinstance(report, DeliveryReport):
                if copy.signed or not self._has_return_path(record):
                    events += self._bounces(copy, report, now, entries)
                # else: its bounces come to its return path, signed; not by headers
            elif isinstance(report, FeedbackReport):
                events += self._complaint(copy, report, now, entries)
            elif isinstance(report, NotAReport):
                events += self._undetermined(copy, now)
        return events, stubs

    def _in_flight(self, message_id: str, now: datetime) -> bool:
        """Whether the relay may still be sending (or recording) the copy."""
        age = now.timestamp() - message_id_time(message_id)
        return age < self._config.relay.max_queue_lifetime + IN_FLIGHT_MARGIN

    def _has_return_path(self, record: MessageRecord) -> bool:
        config_set = self._config.config_sets.get(record.config_set or "")
        return config_set is not None and config_set.return_path_domain is not None

    def _suppress_on(self, copy: _Copy, what: str) -> bool:
        """Whether a report on `copy` may put its recipients on the list: its set says so,
        and the report is one nobody else could have written (the copy's signed return
        path, or a copy of one recipient, whose copy id only that recipient has seen)."""
        if not copy.signed and len(copy.destination) > 1:
            return False
        config_set = self._config.config_sets.get(copy.record.config_set or "")
        return config_set is None or what in config_set.suppress_on

    def _undetermined(self, copy: _Copy, now: datetime) -> list[Event]:
        return [
            bounce_event(
                copy.record.id,
                bounce_type="Undetermined",
                bounce_subtype="Undetermined",
                recipients=[(address, "", "") for address in copy.destination],
                reporting_mta=None,
                now=now,
            )
        ]

    def _bounces(
        self, copy: _Copy, report: DeliveryReport, now: datetime, entries: list[Suppressed]
    ) -> list[Event]:
        """The copy's Bounces for the failed recipients that the report names (its one
        recipient, for a copy of one): one event per bounce type, as SES has one type
        per event; only the Permanent ones are suppressed."""
        destination = copy.destination
        by_kind: dict[tuple[str, str], list[tuple[str, RecipientStatus]]] = {}
        seen: set[str] = set()
        for status in report.recipients:
            if status.action != "failed":
                continue
            if len(destination) == 1:
                address = destination[0]
            elif matched := _matching(destination, (status.address, status.original)):
                address = matched[0]
            else:
                continue  # another copy's recipient
            if address in seen:
                continue
            seen.add(address)
            kind = bounce_kind_of(report, status)
            by_kind.setdefault((kind.type, kind.subtype), []).append((address, status))
        events = []
        for (bounce_type, subtype), bounced in by_kind.items():
            if bounce_type == "Permanent" and self._suppress_on(copy, "bounce"):
                entries += self._entries(
                    (address for address, _ in bounced), Reason.BOUNCE, copy.record, now
                )
            events.append(
                bounce_event(
                    copy.record.id,
                    bounce_type=bounce_type,
                    bounce_subtype=subtype,
                    recipients=[
                        (address, status.status, status.diagnostic or "")
                        for address, status in bounced
                    ],
                    reporting_mta=report.reporting_mta,
                    remote_mta_ip=report.remote_mta_ip,
                    now=now,
                )
            )
        return events

    def _complaint(
        self, copy: _Copy, report: FeedbackReport, now: datetime, entries: list[Suppressed]
    ) -> list[Event]:
        """The copy's Complaint, naming the recipients the report names (all of the
        copy's, when it leaves them out, as SES does); never an address the copy did not
        go to."""
        recipients = _matching(copy.destination, report.original_rcpt_to) or copy.destination
        if report.feedback_type != _UNSPAMMED and self._suppress_on(copy, "complaint"):
            entries += self._entries(recipients, Reason.COMPLAINT, copy.record, now)
        return [
            complaint_event(
                copy.record.id,
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
