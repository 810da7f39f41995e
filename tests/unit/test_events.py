"""Events have SES's shape: the keys of the reference examples, nothing renamed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pixelpost.core.bounces import bounce_kind
from pixelpost.core.event_types import EventType
from pixelpost.core.events import (
    bounce_event,
    click_event,
    delivery_event,
    dumps,
    open_event,
    reject_event,
    render,
    rendering_failure_event,
    send_event,
)
from pixelpost.core.mail import common_headers, mail_object, timestamp

NOW = datetime(2017, 8, 9, 21, 59, 49, 927000, tzinfo=UTC)
# The keys of SES's documented Open example (reference/ses-and-esps.md).
SES_MAIL_KEYS = {
    "commonHeaders",
    "destination",
    "headers",
    "headersTruncated",
    "messageId",
    "source",
    "tags",
    "timestamp",
}
HEADERS = (
    b"X-SES-CONFIGURATION-SET: ConfigSet\r\n"
    b"X-SES-MESSAGE-TAGS: myCustomTag1=myCustomValue1\r\n"
    b"From: Sender <sender@example.com>\r\n"
    b"To: recipient@example.com, =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <original@example.com>\r\n"
    b"\r\n"
)


def mail() -> dict[str, object]:
    return mail_object(
        message_id="01a228d20a21020c7c34c59663927ded",
        sent_at=NOW,
        source="bounces@example.com",
        destination=["recipient@example.com"],
        headers=[("From", "Sender <sender@example.com>"), ("Subject", "hi")],
        common=common_headers(HEADERS),
        config_set="ConfigSet",
        message_tags={"myCustomTag1": ("myCustomValue1",)},
        source_ip="192.0.2.0",
        caller_identity="app",
    )


def test_mail_object() -> None:
    built = mail()
    assert set(built) == SES_MAIL_KEYS
    assert built["timestamp"] == "2017-08-09T21:59:49.927Z"
    assert built["tags"] == {
        "myCustomTag1": ["myCustomValue1"],
        "ses:configuration-set": ["ConfigSet"],
        "ses:from-domain": ["example.com"],
        "ses:source-ip": ["192.0.2.0"],
        "ses:caller-identity": ["app"],
    }
    assert built["commonHeaders"] == {
        "from": ["Sender <sender@example.com>"],
        "to": ["recipient@example.com", "Jörg <jorg@example.com>"],
        "messageId": "01a228d20a21020c7c34c59663927ded",
        "subject": "Grüße",
    }
    assert built["headers"] == [
        {"name": "From", "value": "Sender <sender@example.com>"},
        {"name": "Subject", "value": "hi"},
    ]
    assert built["headersTruncated"] is False


def test_headers_past_10_kb_are_truncated() -> None:
    many = [(f"X-Filler-{n}", "x" * 200) for n in range(100)]
    built = mail_object(
        message_id="m",
        sent_at=NOW,
        source="a@b.c",
        destination=[],
        headers=many,
        common={},
        config_set=None,
        message_tags={},
        source_ip="::1",
        caller_identity="::1",
    )
    assert built["headersTruncated"] is True
    assert 40 < len(built["headers"]) < 60
    assert "ses:configuration-set" not in built["tags"]


@pytest.mark.parametrize(
    ("event", "key", "fields"),
    [
        (send_event("m", now=NOW), "send", set()),
        (reject_event("m", reason="Bad content", now=NOW), "reject", {"reason"}),
        (
            rendering_failure_event("m", error="bad", now=NOW),
            "failure",
            {"errorMessage", "templateName"},
        ),
        (
            delivery_event(
                "m",
                recipients=["r@x"],
                smtp_response="250 ok",
                processing_ms=5,
                reporting_mta="relay.example",
                now=NOW,
            ),
            "delivery",
            {"timestamp", "processingTimeMillis", "recipients", "smtpResponse", "reportingMTA"},
        ),
        (
            bounce_event(
                "m",
                bounce_type="Permanent",
                bounce_subtype="General",
                recipients=[("r@x", "5.0.0", "smtp; 550 no")],
                reporting_mta="relay",
                now=NOW,
            ),
            "bounce",
            {
                "bounceType",
                "bounceSubType",
                "bouncedRecipients",
                "timestamp",
                "feedbackId",
                "reportingMTA",
            },
        ),
        (
            open_event("m", ip="192.0.2.1", user_agent="UA", now=NOW),
            "open",
            {"ipAddress", "timestamp", "userAgent"},
        ),
        (
            click_event(
                "m",
                ip="192.0.2.1",
                user_agent="UA",
                link="https://x",
                link_tags={"a": ("b",)},
                now=NOW,
            ),
            "click",
            {"ipAddress", "timestamp", "userAgent", "link", "linkTags"},
        ),
    ],
)
def test_rendered_events_have_ses_shape(event: object, key: str, fields: set[str]) -> None:
    from pixelpost.core.events import Event  # noqa: PLC0415

    assert isinstance(event, Event)
    body = json.loads(render(event.type, dumps(mail()), event.detail, event.message_id))
    assert list(body) == ["eventType", "mail", key]
    assert body["eventType"] == event.type.value
    assert set(body["mail"]) == SES_MAIL_KEYS
    assert set(body[key]) == fields


def test_render_without_a_mail_record() -> None:
    event = open_event("m1", ip="192.0.2.1", user_agent="UA", now=NOW)
    body = json.loads(render(EventType.OPEN, None, event.detail, "m1"))
    assert body["mail"] == {"messageId": "m1"}
    assert body["open"]["timestamp"] == timestamp(NOW)


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (
            550,
            "5.1.1 <x@example.com>: Recipient address rejected: User unknown",
            ("Permanent", "NoEmail", "5.1.1"),
        ),
        (550, "No such user here", ("Permanent", "NoEmail", "5.0.0")),
        (552, "5.2.2 Mailbox full", ("Transient", "MailboxFull", "5.2.2")),
        (552, "5.3.4 Message too big for system", ("Transient", "MessageTooLarge", "5.3.4")),
        (554, "5.7.1 Message rejected as spam", ("Transient", "ContentRejected", "5.7.1")),
        (554, "5.7.1 Attachment type not allowed", ("Transient", "AttachmentRejected", "5.7.1")),
        (554, "5.7.1 Relay access denied", ("Permanent", "General", "5.7.1")),
        (500, "what?", ("Permanent", "General", "5.0.0")),
    ],
)
def test_bounce_classification(code: int, text: str, kind: tuple[str, str, str]) -> None:
    found = bounce_kind(code, text)
    assert (found.type, found.subtype, found.status) == kind
