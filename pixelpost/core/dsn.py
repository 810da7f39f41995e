"""Delivery status notifications (RFC 3464): the bounce a sender gets for mail the relay
could not deliver, sent from the null reverse path so that it is never bounced itself.

Pure: it takes the original message and the failed recipients and returns the
notification's bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

from pixelpost.core.headers import parse_header_section

HEADERS_LIMIT = 64 * 1024
"""The original's header section is returned whole up to this size."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Failure:
    """One recipient the relay gave up on."""

    recipient: str
    status: str
    """The enhanced status code, 5.x.x (or 4.x.x when the time ran out)."""
    diagnostic: str
    """The upstream's reply, as received."""
    remote_mta: str | None = None


def _header_value(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def notification(
    *,
    original: bytes,
    sender: str,
    failures: Sequence[Failure],
    reporting_mta: str,
    arrival: datetime,
    now: datetime | None = None,
) -> bytes:
    """The DSN to `sender` for `failures` of the message `original`."""
    now = now or datetime.now(UTC)
    boundary = make_msgid(domain=reporting_mta).strip("<>").replace("@", ".")
    section = parse_header_section(original)
    headers = original[: section.body_offset][:HEADERS_LIMIT]
    subject = next((f.value(original) for f in section.find("subject")), "(no subject)")
    text = (
        _report_headers(
            sender=sender, subject=subject, reporting_mta=reporting_mta, now=now, boundary=boundary
        )
        + "This is a MIME-encapsulated message.\r\n\r\n"
        + _part(boundary, "text/plain; charset=utf-8", "Notification")
        + _human_readable(reporting_mta, failures)
        + "\r\n"
        + _part(boundary, "message/delivery-status", "Delivery report")
        + _delivery_status(reporting_mta, arrival, failures)
        + "\r\n"
        + _part(boundary, "text/rfc822-headers", "Undelivered Message Headers")
    )
    return text.encode("utf-8", "replace") + headers + f"\r\n--{boundary}--\r\n".encode("ascii")


def _report_headers(
    *, sender: str, subject: str, reporting_mta: str, now: datetime, boundary: str
) -> str:
    """The notification's header section, blank line included: from the mailer daemon,
    and auto-replied (RFC 3834) so that no responder answers it."""
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{sender}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender: {_header_value(subject)[:200]}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
    )


def _part(boundary: str, content_type: str, description: str) -> str:
    """The delimiter that opens a part of the report, and the part's header section.
    The CRLF before a later delimiter belongs to that delimiter (RFC 2046), not to the
    part's text."""
    return (
        f"--{boundary}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Description: {description}\r\n\r\n"
    )


def _human_readable(reporting_mta: str, failures: Sequence[Failure]) -> str:
    """The first part, for the sender to read: each failed recipient and its reply."""
    listed = "\r\n".join(f"  <{f.recipient}>: {_header_value(f.diagnostic)}" for f in failures)
    return (
        f"This is the mail system at {reporting_mta}.\r\n\r\n"
        "Your message could not be delivered to the following recipients. "
        "It was not sent to them, and will not be.\r\n\r\n"
        f"{listed}\r\n"
    )


def _delivery_status(reporting_mta: str, arrival: datetime, failures: Sequence[Failure]) -> str:
    """The second part, for the sender's software (RFC 3464): the per-message fields,
    then one group of fields for each failed recipient."""
    return (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"Arrival-Date: {format_datetime(arrival)}\r\n"
        + "".join(_recipient_status(f) for f in failures)
    )


def _recipient_status(failure: Failure) -> str:
    """One recipient's fields, after the blank line that separates them."""
    remote_mta = f"Remote-MTA: dns; {failure.remote_mta}\r\n" if failure.remote_mta else ""
    return (
        f"\r\nFinal-Recipient: rfc822; {failure.recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {failure.status}\r\n"
        f"{remote_mta}"
        f"Diagnostic-Code: smtp; {_header_value(failure.diagnostic)}\r\n"
    )
