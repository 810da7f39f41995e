"""Delivery status notifications (RFC 3464)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from pixelpost.core.dsn import Failure, notification

ORIGINAL = (
    b"Received: from app by relay.test\r\n"
    b"From: Sender <sender@example.com>\r\n"
    b"Subject: Spring =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"The body, which is not returned.\r\n"
)


def build(failures: list[Failure]) -> EmailMessage:
    raw = notification(
        original=ORIGINAL,
        sender="sender@example.com",
        failures=failures,
        reporting_mta="relay.test",
        arrival=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        now=datetime(2026, 11, 29, 12, 5, tzinfo=UTC),
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_a_notification_is_a_delivery_status_report() -> None:
    report = build(
        [
            Failure(
                recipient="gone@example.org",
                status="5.1.1",
                diagnostic="550 5.1.1 No such user here",
            )
        ]
    )

    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == "sender@example.com"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Subject"] == "Undelivered Mail Returned to Sender: Spring Grüße"
    human, status, headers = report.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert "<gone@example.org>: 550 5.1.1 No such user here" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    text = status.as_string()
    assert "Reporting-MTA: dns; relay.test" in text
    assert "Final-Recipient: rfc822; gone@example.org" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user here" in text
    assert headers.get_content_type() == "text/rfc822-headers"
    returned = headers.as_bytes()
    assert b"Message-ID: <m1@example.com>" in returned
    assert b"The body, which is not returned." not in returned


def test_each_failed_recipient_has_its_own_status_and_replies_stay_on_one_line() -> None:
    report = build(
        [
            Failure(recipient="a@example.org", status="5.1.1", diagnostic="550 5.1.1 gone"),
            Failure(
                recipient="b@example.org",
                status="4.4.7",
                diagnostic="451 4.4.7 Delivery time expired\r\nInjected: header",
            ),
        ]
    )

    _, status, _ = report.iter_parts()
    text = status.as_string()
    assert text.count("Final-Recipient:") == 2
    assert "Status: 4.4.7" in text
    assert "\nInjected:" not in text
    assert "Delivery time expired Injected: header" in text
