"""Events in the JSON shape of SES event publishing, built by pure functions.

The relay builds the `mail` object of each copy once, when it accepts the message; every
event of that copy (Send, Delivery, Bounce, Open, Click, …) carries it, as SES's do.
A consumer written for SES reads these unchanged; fields pixelpost adds are extra keys,
never new meanings for SES's.

Only `ses:caller-identity` needs a word: SES puts the IAM identity that sent the mail
there; pixelpost puts the SMTP AUTH user, or, for a client admitted by
`relay.allow_networks`, its address.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader
from email.parser import BytesHeaderParser
from typing import Any, Protocol

from pixelpost.event_types import EventType

HEADERS_LIMIT = 10 * 1024
"""SES truncates `mail.headers` past 10 KB and says so in `headersTruncated`."""

_COMMON_HEADERS = {
    "from": "from",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "replyTo",
    "sender": "sender",
    "return-path": "returnPath",
}

JSON = dict[str, Any]
Mail = Mapping[str, Any]
"""A `mail` object: read-only once built."""


def timestamp(when: datetime) -> str:
    """SES's timestamp format: ISO 8601 in UTC with milliseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One event: its stable id (the webhook-id of every delivery attempt), what it is
    about, and its SES JSON."""

    id: str
    type: EventType
    message_id: str
    config_set: str | None
    created_at: datetime
    body: JSON


def _addresses(header: object) -> list[str]:
    if isinstance(header, AddressHeader):
        return [str(address) for address in header.addresses]
    return [str(header)]


def common_headers(header_block: bytes) -> JSON:
    """SES's `commonHeaders`: the usual headers, decoded (RFC 2047) and split into
    address lists."""
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(header_block)
    common: JSON = {}
    for name, key in _COMMON_HEADERS.items():
        try:
            values = parsed.get_all(name)
            if values:
                common[key] = [a for value in values for a in _addresses(value)]
        except (HeaderParseError, ValueError, IndexError, TypeError):
            continue  # a header the parser cannot read is left out, not guessed at
    for name, key in (("message-id", "messageId"), ("subject", "subject"), ("date", "date")):
        try:
            value = parsed.get(name)
        except (HeaderParseError, ValueError, IndexError, TypeError):
            continue
        if value is not None:
            common[key] = str(value)
    return common


def from_domain(common: JSON, mail_from: str) -> str:
    """The domain of the From address (SES's `ses:from-domain`), else of the sender."""
    candidates: list[str] = [*common.get("from", []), mail_from]
    for address in candidates:
        domain = address.rpartition("@")[2].rstrip(">").strip()
        if "@" in address and domain:
            return domain.lower()
    return ""


def mail_object(
    *,
    message_id: str,
    sent_at: datetime,
    source: str,
    destination: Sequence[str],
    headers: Sequence[tuple[str, str]],
    common: JSON,
    config_set: str | None,
    message_tags: Mapping[str, Sequence[str]],
    source_ip: str,
    caller_identity: str,
) -> JSON:
    """The `mail` object of one copy of a message."""
    kept: list[JSON] = []
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if size > HEADERS_LIMIT:
            break
        kept.append({"name": name, "value": value})
    tags: dict[str, list[str]] = {name: list(values) for name, values in message_tags.items()}
    if config_set is not None:
        tags["ses:configuration-set"] = [config_set]
    tags["ses:from-domain"] = [from_domain(common, source)]
    tags["ses:source-ip"] = [source_ip]
    tags["ses:caller-identity"] = [caller_identity]
    return {
        "timestamp": timestamp(sent_at),
        "source": source,
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": len(kept) < len(headers),
        "headers": kept,
        "commonHeaders": {**common, "messageId": common.get("messageId", message_id)},
        "tags": tags,
    }


def _event(type_: EventType, mail: Mail, detail_key: str, detail: JSON, now: datetime) -> Event:
    config_sets: list[str] = mail["tags"].get("ses:configuration-set", [])
    message_id: str = mail["messageId"]
    return Event(
        id=str(uuid.uuid4()),
        type=type_,
        message_id=message_id,
        config_set=config_sets[0] if config_sets else None,
        created_at=now,
        body={"eventType": type_.value, "mail": mail, detail_key: detail},
    )


def send_event(mail: Mail, *, now: datetime) -> Event:
    """The relay accepted the message."""
    return _event(EventType.SEND, mail, "send", {}, now)


def rendering_failure_event(mail: Mail, *, error: str, now: datetime) -> Event:
    """Tracking could not be added; the message went out as it came in."""
    return _event(
        EventType.RENDERING_FAILURE,
        mail,
        "failure",
        {"errorMessage": error, "templateName": ""},
        now,
    )


def open_event(
    mail: JSON, *, ip: str, user_agent: str, now: datetime, extra: JSON | None = None
) -> Event:
    """A recipient's client fetched the pixel."""
    detail = {
        "ipAddress": ip,
        "timestamp": timestamp(now),
        "userAgent": user_agent,
        **(extra or {}),
    }
    return _event(EventType.OPEN, mail, "open", detail, now)


def click_event(
    mail: Mail,
    *,
    ip: str,
    user_agent: str,
    link: str,
    link_tags: Mapping[str, Sequence[str]],
    now: datetime,
    extra: JSON | None = None,
) -> Event:
    """A recipient followed a tracked link."""
    detail = {
        "ipAddress": ip,
        "timestamp": timestamp(now),
        "userAgent": user_agent,
        "link": link,
        "linkTags": {name: list(values) for name, values in link_tags.items()},
        **(extra or {}),
    }
    return _event(EventType.CLICK, mail, "click", detail, now)


class EventSink(Protocol):
    """Where events go: durably recorded before `publish` returns."""

    async def publish(self, events: Sequence[Event]) -> None: ...


class LoggingEventSink:
    """Writes events to the log: what the relay uses until a store is configured."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(__name__)

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self._log.info("%s: %s event %s", event.message_id, event.type.value, event.id)
