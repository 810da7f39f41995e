"""Events in the JSON shape of SES event publishing, built by pure functions.

An `Event` holds its stable id (the `webhook-id` of every delivery attempt), the message
copy it is about, and its type's own object (`open`, `delivery`, …). The `mail` object
is kept once per copy in the store (see `pixelpost.core.mail`) and joined in by `render`, so
a consumer gets exactly SES's record: `{"eventType", "mail", "<type>"}`. Fields
pixelpost adds are extra keys, never new meanings for SES's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any

from pixelpost.core.event_types import EventType
from pixelpost.core.ids import new_event_id
from pixelpost.core.mail import JSON, timestamp

DETAIL_KEYS = {
    EventType.SEND: "send",
    EventType.REJECT: "reject",
    EventType.BOUNCE: "bounce",
    EventType.COMPLAINT: "complaint",
    EventType.DELIVERY: "delivery",
    EventType.OPEN: "open",
    EventType.CLICK: "click",
    EventType.RENDERING_FAILURE: "failure",
    EventType.DELIVERY_DELAY: "deliveryDelay",
    EventType.SUBSCRIPTION: "subscription",
}
"""The key of each type's own object in SES's JSON."""

_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Something that happened to one copy of a message."""

    id: str
    type: EventType
    message_id: str
    created_at: datetime
    detail: str
    """The type's own object, as JSON."""


def dumps(value: Any) -> str:
    """Compact JSON, as events are stored and sent. Lone surrogates (bytes that were
    not UTF-8, as aiosmtpd and aiosmtplib decode them) become U+FFFD: JSON and the
    store can only carry text."""
    text = json.dumps(value, **_COMPACT)  # type: ignore[arg-type]
    return text if text.isascii() else clean_text(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with any lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def render(
    event_type: EventType, mail_json: str | None, detail_json: str, message_id: str
) -> bytes:
    """An event's SES JSON from its stored parts, without parsing them again. A copy the
    store no longer knows (purged, or sent before its records) gets a `mail` object with
    its message id only."""
    mail = mail_json if mail_json is not None else dumps({"messageId": message_id})
    return (
        f'{{"eventType":{dumps(event_type.value)},"mail":{mail},'
        f'"{DETAIL_KEYS[event_type]}":{detail_json}}}'
    ).encode()


def _event(type_: EventType, message_id: str, now: datetime, detail: JSON | str) -> Event:
    return Event(
        id=new_event_id(),
        type=type_,
        message_id=message_id,
        created_at=now,
        detail=detail if isinstance(detail, str) else dumps(detail),
    )


def send_event(message_id: str, *, now: datetime) -> Event:
    """The relay accepted the message."""
    return _event(EventType.SEND, message_id, now, {})


def reject_event(message_id: str, *, reason: str, now: datetime) -> Event:
    """The relay took the message but will not send it on (SES: a virus)."""
    return _event(EventType.REJECT, message_id, now, {"reason": reason})


def rendering_failure_event(message_id: str, *, error: str, now: datetime) -> Event:
    """Tracking could not be added; the message went out as it came in."""
    return _event(
        EventType.RENDERING_FAILURE,
        message_id,
        now,
        {"errorMessage": error, "templateName": ""},
    )


def delivery_event(
    message_id: str,
    *,
    recipients: Sequence[str],
    smtp_response: str,
    processing_ms: int,
    reporting_mta: str,
    now: datetime,
) -> Event:
    """The upstream accepted the message."""
    return _event(
        EventType.DELIVERY,
        message_id,
        now,
        {
            "timestamp": timestamp(now),
            "processingTimeMillis": processing_ms,
            "recipients": list(recipients),
            "smtpResponse": smtp_response,
            "reportingMTA": reporting_mta,
        },
    )


def bounce_event(
    message_id: str,
    *,
    bounce_type: str,
    bounce_subtype: str,
    recipients: Sequence[tuple[str, str, str]],
    reporting_mta: str | None,
    now: datetime,
    remote_mta_ip: str | None = None,
) -> Event:
    """The message cannot be delivered; `recipients` are (address, status, diagnostic).
    `reporting_mta` is a host name, or a returned report's field as given ("dns; host");
    None for a bounce that names none (SES leaves the field out then)."""
    detail: dict[str, object] = {
        "bounceType": bounce_type,
        "bounceSubType": bounce_subtype,
        "bouncedRecipients": [
            _bounced(address, status, diagnostic) for address, status, diagnostic in recipients
        ],
        "timestamp": timestamp(now),
        "feedbackId": str(uuid.uuid4()),
    }
    if reporting_mta:
        detail["reportingMTA"] = reporting_mta if ";" in reporting_mta else f"dns; {reporting_mta}"
    if remote_mta_ip is not None:
        detail["remoteMtaIp"] = remote_mta_ip
    return _event(EventType.BOUNCE, message_id, now, detail)


def _bounced(address: str, status: str, diagnostic: str) -> dict[str, str]:
    """One of bouncedRecipients; without the status and diagnostic when none is known
    (an Undetermined bounce), as SES leaves them out."""
    recipient = {"emailAddress": address}
    if status:
        recipient |= {"action": "failed", "status": status}
    if diagnostic:
        recipient["diagnosticCode"] = diagnostic
    return recipient


def complaint_event(
    message_id: str,
    *,
    recipients: Sequence[str],
    feedback_type: str | None,
    user_agent: str | None,
    arrival_date: datetime | None,
    now: datetime,
) -> Event:
    """A recipient reported the message as spam (an ARF feedback report, RFC 5965)."""
    detail: dict[str, object] = {
        "complainedRecipients": [{"emailAddress": address} for address in recipients],
        "timestamp": timestamp(now),
        "feedbackId": str(uuid.uuid4()),
        "complaintSubType": None,
    }
    if user_agent is not None:
        detail["userAgent"] = user_agent
    if feedback_type is not None:
        detail["complaintFeedbackType"] = feedback_type
    if arrival_date is not None:
        detail["arrivalDate"] = timestamp(arrival_date)
    return _event(EventType.COMPLAINT, message_id, now, detail)


class SubscriptionSource(StrEnum):
    """How a recipient unsubscribed, as SES names it."""

    HEADER = "UnsubscribeHeader"
    """The one-click POST (RFC 8058) of the `List-Unsubscribe` URL."""
    LINK = "UnsubscribeLink"
    """The unsubscribe page's button (the URL followed from the message)."""
    MAILTO = "UnsubscribeMailto"
    """Mail to the `List-Unsubscribe` field's `mailto:` address."""


def _preferences(unsubscribed: bool) -> dict[str, object]:
    return {"unsubscribeAll": unsubscribed, "topicSubscriptionStatus": []}


def subscription_event(
    message_id: str,
    *,
    contact_list: str,
    scope: str,
    source: SubscriptionSource,
    unsubscribed: bool,
    now: datetime,
) -> Event:
    """A recipient of the copy unsubscribed (or, `unsubscribed` False, subscribed
    again) from `contact_list`, the copy's configuration set; `scope` (pixelpost's
    addition) says whether from that set's mail ("config_set") or from all ("account")."""
    return _event(
        EventType.SUBSCRIPTION,
        message_id,
        now,
        {
            "contactList": contact_list,
            "timestamp": timestamp(now),
            "source": source.value,
            "newTopicPreferences": _preferences(unsubscribed),
            "oldTopicPreferences": _preferences(not unsubscribed),
            "scope": scope,
        },
    )


def _hit(ip: str, user_agent: str, now: datetime, extra: JSON | None) -> str:
    # Opens and clicks are the tracker's hot path: their JSON is written by hand.
    text = (
        f'{{"ipAddress":{encode_basestring(ip)},"timestamp":"{timestamp(now)}",'
        f'"userAgent":{encode_basestring(user_agent)}'
    )
    return text + ("," + dumps(extra)[1:] if extra else "}")


def delivery_delay_event(
    message_id: str,
    *,
    delay_type: str,
    recipients: Sequence[tuple[str, str, str]],
    expiration: datetime,
    reporting_mta: str,
    now: datetime,
) -> Event:
    """The upstream deferred the message; `recipients` are (address, status,
    diagnostic). SES sends it once, at the first deferral."""
    return _event(
        EventType.DELIVERY_DELAY,
        message_id,
        now,
        {
            "timestamp": timestamp(now),
            "delayType": delay_type,
            "expirationTime": timestamp(expiration),
            "delayedRecipients": [
                {"emailAddress": address, "status": status, "diagnosticCode": diagnostic}
                for address, status, diagnostic in recipients
            ],
            "reportingMTA": reporting_mta,
        },
    )


def open_event(
    message_id: str, *, ip: str, user_agent: str, now: datetime, extra: JSON | None = None
) -> Event:
    """A recipient's client fetched the pixel."""
    return _event(EventType.OPEN, message_id, now, _hit(ip, user_agent, now, extra))


def click_event(
    message_id: str,
    *,
    ip: str,
    user_agent: str,
    link: str,
    link_tags: Mapping[str, Sequence[str]],
    now: datetime,
    extra: JSON | None = None,
) -> Event:
    """A recipient followed a tracked link."""
    click = {"link": link, "linkTags": {name: list(values) for name, values in link_tags.items()}}
    return _event(
        EventType.CLICK, message_id, now, _hit(ip, user_agent, now, {**click, **(extra or {})})
    )
