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
    original_subject = next((f.value(original) for f in section.find("subject")), "(no subject)")
    listed = "\r\n".join(f"  <{f.recipient}>: {_header_value(f.diagnostic)}" for f in failures)
    human = (
        f"This is the mail system at {reporting_mta}.\r\n\r\n"
        "Your message could not be delivered to the following recipients. "
        "It was not sent to them, and will not be.\r\n\r\n"
        f"{listed}\r\n"
    )
    per_recipient = "".join(
        f"\r\nFinal-Recipient: rfc822; {f.recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {f.status}\r\n"
        + (f"Remote-MTA: dns; {f.remote_mta}\r\n" if f.remote_mta else "")
        + f"Diagnostic-Code: smtp; {_header_value(f.diagnostic)}\r\n"
        for f in failures
    )
    status = (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"Arrival-Date: {format_datetime(arrival)}\r\n"
        f"{per_recipient}"
    )
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n",
        f"To: <{sender}>\r\n",
        "Subject: Undelivered Mail Returned to Sender: "
        f"{_header_value(original_subject)[:200]}\r\n",
        f"Date: {format_datetime(now)}\r\n",
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n',
        "\r\n",
        "This is a MIME-encapsulated message.\r\n\r\n",
        f"--{boundary}\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Description: Notification\r\n\r\n",
        human,
        f"\r\n--{boundary}\r\n",
        "Content-Type: message/delivery-status\r\n",
        "Content-Description: Delivery report\r\n\r\n",
        status,
        f"\r\n--{boundary}\r\n",
        "Content-Type: text/rfc822-headers\r\n",
        "Content-Description: Undelivered Message Headers\r\n\r\n",
    ]
    text = "".join(parts).encode("utf-8", "replace")
    return text + headers + f"\r\n--{boundary}--\r\n".encode("ascii")
