"""Reading mail that comes back (pixelpost/core/reports): delivery status notifications as
Postfix, Exim, Sendmail and Office 365 write them and RFC 6533's global ones; feedback
reports as Microsoft, Yahoo and a Gmail-like loop send them; auto-replies of each kind;
the plain-text bounces of qmail, old Postfix, old Exim and Exchange; and input that is
none of these, or broken.

The fixtures in tests/fixtures/reports/ were written for these tests after each format's
documentation and published samples, with CRLF line ends (.gitattributes keeps them so).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest
from flufl.bounce import all_failures
from hypothesis import given
from hypothesis import strategies as st

import pixelpost.core.reports as reports
from pixelpost.core.bounces import BounceKind
from pixelpost.core.reports import (
    AutoReply,
    DeliveryReport,
    FeedbackReport,
    NotAReport,
    RecipientStatus,
    Report,
    bounce_kind_of,
    header_section,
    read_report,
    returned_header,
)
from tests.conftest import FIXTURES

REPORTS = FIXTURES / "reports"

KINDS: dict[str, type[Report]] = {
    "postfix-dsn-rfc822.eml": DeliveryReport,
    "postfix-dsn-headers.eml": DeliveryReport,
    "exim-dsn.eml": DeliveryReport,
    "office365-dsn.eml": DeliveryReport,
    "multi-recipient-dsn.eml": DeliveryReport,
    "global-dsn.eml": DeliveryReport,
    "dsn-no-boundary.eml": DeliveryReport,
    "dsn-text-plain-status.eml": DeliveryReport,
    "truncated-dsn.eml": DeliveryReport,
    "non-utf8-headers.eml": DeliveryReport,
    "arf-microsoft-jmrp.eml": FeedbackReport,
    "arf-jmrp-original-only.eml": FeedbackReport,
    "jmrp-mixed.eml": FeedbackReport,
    "arf-yahoo.eml": FeedbackReport,
    "arf-gmail.eml": FeedbackReport,
    "arf-redacted.eml": FeedbackReport,
    "qmail.eml": DeliveryReport,
    "postfix-old.eml": DeliveryReport,
    "postfix-old-plain.eml": NotAReport,
    "exim-plain.eml": DeliveryReport,
    "exchange-ndr.eml": DeliveryReport,
    "auto-submitted.eml": AutoReply,
    "x-autoreply.eml": AutoReply,
    "x-autorespond.eml": AutoReply,
    "precedence-auto-reply.eml": AutoReply,
    "x-auto-response-suppress.eml": AutoReply,
    "subject-out-of-office.eml": AutoReply,
    "subject-automatic-reply.eml": AutoReply,
    "subject-auto.eml": AutoReply,
    "subject-abwesenheitsnotiz.eml": AutoReply,
    "subject-reponse-automatique.eml": AutoReply,
    "mdn.eml": AutoReply,
}


def read(name: str) -> bytes:
    return (REPORTS / name).read_bytes()


@contextmanager
def no_warnings() -> Iterator[None]:
    """Fails when the reader logs a warning: that it caught what it did not expect."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("pixelpost.core.reports")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


def read_cleanly(data: bytes) -> Report:
    """`read_report`, which has not needed its last resort (it never raises)."""
    with no_warnings():
        report = read_report(data)
    assert isinstance(report, DeliveryReport | FeedbackReport | AutoReply | NotAReport)
    assert not (isinstance(report, NotAReport) and report.reason.startswith("unreadable"))
    return report


def delivery(name: str) -> DeliveryReport:
    report = read_cleanly(read(name))
    assert isinstance(report, DeliveryReport), report
    return report


def feedback(name: str) -> FeedbackReport:
    report = read_cleanly(read(name))
    assert isinstance(report, FeedbackReport), report
    return report


def without_headers(report: DeliveryReport | FeedbackReport) -> object:
    return dataclasses.replace(report, original_headers=None)


def kind(report: DeliveryReport, index: int = 0) -> tuple[str, str]:
    found = bounce_kind_of(report, report.recipients[index])
    return found.type, found.subtype


def test_the_public_names() -> None:
    assert sorted(reports.__all__) == [
        "AutoReply",
        "DeliveryReport",
        "FeedbackReport",
        "NotAReport",
        "RecipientStatus",
        "Report",
        "bounce_kind_of",
        "header_section",
        "read_report",
        "returned_header",
    ]
    assert all(hasattr(reports, name) for name in reports.__all__)


def test_every_fixture_is_listed_kept_with_crlf_and_read_as_listed() -> None:
    assert sorted(p.name for p in REPORTS.glob("*.eml")) == sorted(KINDS)
    for name, expected in KINDS.items():
        data = read(name)
        assert b"\n" not in data.replace(b"\r\n", b""), name
        assert type(read_cleanly(data)) is expected, name


# Delivery status notifications.


def test_a_postfix_dsn_with_the_returned_message() -> None:
    data = read("postfix-dsn-rfc822.eml")
    report = delivery("postfix-dsn-rfc822.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns; postfix.example.org",
        arrival_date="Fri, 29 Nov 2024 12:00:03 +0000 (UTC)",
        recipients=(
            RecipientStatus(
                address="gone@example.net",
                original="gone@example.net",
                action="failed",
                status="5.1.1",
                diagnostic="smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected: "
                "User unknown in virtual mailbox table",
                remote_mta="dns; mx.example.net",
            ),
        ),
        original_headers=None,
        standard=True,
        remote_mta_ip=None,
    )
    headers = report.original_headers
    assert headers is not None
    assert headers.startswith(b"Received: from relay.example.com (relay.example.com [198.")
    assert headers.endswith(b"Content-Type: text/plain; charset=utf-8\r\n")
    # The returned header section as it was sent, up to (not with) its blank line.
    assert data[data.index(headers) + len(headers) :].startswith(b"\r\nThank you")
    assert returned_header(headers, "Message-ID") == ["<order-1@example.com>"]
    assert returned_header(headers, "received")[1] == (
        "from app ([10.0.0.5]) by relay.example.com (pixelpost) with ESMTP id "
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0 for <gone@example.net>; Fri, 29 Nov 2024 12:00:02 +0000"
    )
    assert bounce_kind_of(report, report.recipients[0]) == BounceKind(
        type="Permanent", subtype="NoEmail", status="5.1.1"
    )


def test_a_postfix_delay_notice_with_the_returned_headers() -> None:
    report = delivery("postfix-dsn-headers.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns; postfix.example.org",
        arrival_date="Sat, 30 Nov 2024 12:00:00 +0000 (UTC)",
        recipients=(
            RecipientStatus(
                address="slow@example.org",
                original="slow@example.org",
                action="delayed",
                status="4.4.1",
                diagnostic="X-Postfix; connect to mx.example.org[192.0.2.26]:25: "
                "Connection timed out",
                remote_mta=None,
            ),
        ),
        original_headers=None,
        standard=True,
        remote_mta_ip="192.0.2.26",
    )
    assert report.original_headers is not None
    assert report.original_headers.endswith(b"Date: Sat, 30 Nov 2024 11:59:58 +0000\r\n")
    assert returned_header(report.original_headers, "message-id") == ["<invoice-2@example.com>"]
    assert kind(report) == ("Transient", "General")


def test_an_exim_dsn_whose_status_is_generic_and_its_diagnostic_specific() -> None:
    report = delivery("exim-dsn.eml")

    # Exim writes Action before Final-Recipient, and Status 5.0.0 whatever the reply was.
    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns; exim.example.org",
        arrival_date=None,
        recipients=(
            RecipientStatus(
                address="nobody@example.net",
                original=None,
                action="failed",
                status="5.0.0",
                diagnostic="smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: "
                "User unknown",
                remote_mta="dns; mx.example.net",
            ),
        ),
        original_headers=None,
        standard=True,
    )
    assert returned_header(report.original_headers, "Return-Path") == [
        "<b-2e9f@bounces.example.com>"
    ]
    assert kind(report) == ("Permanent", "NoEmail")  # by the diagnostic's words


def test_an_office_365_dsn_with_its_text_in_a_multipart_alternative() -> None:
    report = delivery("office365-dsn.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com",
        arrival_date="Fri, 29 Nov 2024 12:00:06 +0000",
        recipients=(
            RecipientStatus(
                address="someone@contoso.com",
                original=None,
                action="failed",
                status="5.1.10",
                diagnostic="smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
                "someone@contoso.com not found by SMTP address lookup",
                remote_mta=None,
            ),
        ),
        original_headers=None,
        standard=True,
    )
    assert report.original_headers is not None
    assert report.original_headers.startswith(b"Received: from relay.example.com (198.51.100.7)")
    assert returned_header(report.original_headers, "Received")[0].endswith(
        "id 15.20.8182.23; Fri, 29 Nov 2024 12:00:06 +0000"
    )
    assert kind(report) == ("Permanent", "NoEmail")


def test_a_dsn_for_two_recipients_one_failed_one_delayed() -> None:
    report = delivery("multi-recipient-dsn.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns; sendmail.example.org",
        arrival_date="Fri, 29 Nov 2024 12:00:00 GMT",
        recipients=(
            RecipientStatus(
                address="full@example.net",
                original=None,
                action="failed",
                status="5.2.2",
                diagnostic="SMTP; 552 5.2.2 Mailbox full",
                remote_mta="DNS; [192.0.2.40]",
            ),
            RecipientStatus(
                address="slow@example.org",
                original="Slow@Example.org",
                action="delayed",
                status="4.3.0",
                diagnostic="SMTP; 451 4.3.0 Temporary local problem - please try later",
                remote_mta="DNS; mx.example.org",
            ),
        ),
        original_headers=None,
        standard=True,
        remote_mta_ip="192.0.2.40",
    )
    assert returned_header(report.original_headers, "to") == ["full@example.net, slow@example.org"]
    assert kind(report, 0) == ("Transient", "MailboxFull")
    assert kind(report, 1) == ("Transient", "General")


def test_a_global_dsn_with_addresses_in_utf_8() -> None:
    report = delivery("global-dsn.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta="dns; mx.example.cn",
        arrival_date="Fri, 29 Nov 2024 12:00:09 +0000",
        recipients=(
            RecipientStatus(
                address="用户@例子.广告",
                original=None,
                action="failed",
                status="5.1.1",
                diagnostic="smtp; 550 5.1.1 <用户@例子.广告>: mailbox unavailable",
                remote_mta=None,
            ),
            RecipientStatus(
                address="jörg@example.de",  # written j\x{00F6}rg, as RFC 6533 allows
                original="Jörg@example.de",
                action="failed",
                status="5.2.1",
                diagnostic="smtp; 550 5.2.1 mailbox disabled",
                remote_mta="dns; [IPv6:2001:db8::25]",
            ),
        ),
        original_headers=None,
        standard=True,
        remote_mta_ip="2001:db8::25",
    )
    assert returned_header(report.original_headers, "subject") == ["Grüße aus dem Shop"]
    assert returned_header(report.original_headers, "to") == ["用户@例子.广告, jörg@example.de"]


def test_well_formed_dsns_name_the_recipients_the_standard_library_finds() -> None:
    for name in (
        "postfix-dsn-rfc822.eml",
        "postfix-dsn-headers.eml",
        "exim-dsn.eml",
        "office365-dsn.eml",
        "multi-recipient-dsn.eml",
    ):
        parsed = message_from_bytes(read(name), policy=policy.default)
        status = next(
            p for p in parsed.walk() if p.get_content_type() == "message/delivery-status"
        )
        blocks = status.get_payload()
        assert isinstance(blocks, list)
        named = [
            str(b["Final-Recipient"]).split(";", 1)[1].strip(" <>")
            for b in blocks
            if isinstance(b, Message) and b["Final-Recipient"]
        ]
        assert [r.address for r in delivery(name).recipients] == named, name


def test_a_dsn_without_its_boundary_parameter_is_read_by_its_first_delimiter() -> None:
    report = delivery("dsn-no-boundary.eml")

    assert report.reporting_mta == "dns; lazy.example.org"
    assert report.recipients == (
        RecipientStatus(
            address="absent@example.net",
            original=None,
            action="failed",
            status="5.1.1",
            diagnostic="smtp; 550 5.1.1 absent@example.net: user unknown",
            remote_mta=None,
        ),
    )
    assert returned_header(report.original_headers, "message-id") == ["<order-11@example.com>"]


def test_a_dsn_whose_status_fields_are_in_a_text_plain_part() -> None:
    report = delivery("dsn-text-plain-status.eml")

    assert report == DeliveryReport(
        reporting_mta="dns; old.example.org",
        arrival_date="Fri, 29 Nov 2024 12:12:59 +0000",
        recipients=(
            RecipientStatus(
                address="refused@example.net",
                original=None,
                action="failed",
                status="5.7.1",
                diagnostic="smtp; 554 5.7.1 Message rejected as spam by Content Filter",
                remote_mta=None,
            ),
        ),
        original_headers=None,
        standard=True,
    )
    assert kind(report) == ("Transient", "ContentRejected")


def test_a_dsn_cut_off_in_its_delivery_status_gives_what_it_has() -> None:
    report = delivery("truncated-dsn.eml")

    assert report == DeliveryReport(
        reporting_mta="dns; postfix.example.org",
        arrival_date="Fri, 29 Nov 2024 12:00:03 +0000 (UTC)",
        recipients=(
            RecipientStatus(
                address="gone@example.net",
                original="gone@example.net",
                action="failed",
                status="5.1.1",
                diagnostic=None,
                remote_mta="dns; mx.exa",
            ),
        ),
        original_headers=None,
        standard=True,
    )


@pytest.mark.parametrize(
    ("cut_after", "recipients"),
    [
        (b"Final-Recipient: rfc822; gone@example.net\r\n", ()),  # nothing says what happened
        (b"Action: fai", ()),  # no action yet
        (
            b"Action: failed\r\nStatus: 5.1",
            (("gone@example.net", "failed", "5.0.0"),),  # the status is not whole
        ),
        (b"Content-Type: message/delivery-status\r\n", ()),
        (b"This is a MIME-encapsulated message.", ()),
    ],
)
def test_a_dsn_cut_anywhere_is_still_a_report_on_the_message(
    cut_after: bytes, recipients: tuple[tuple[str, str, str], ...]
) -> None:
    data = read("postfix-dsn-rfc822.eml")
    report = read_cleanly(data[: data.index(cut_after) + len(cut_after)])

    assert isinstance(report, DeliveryReport)
    assert tuple((r.address, r.action, r.status) for r in report.recipients) == recipients
    assert report.original_headers is None


def test_header_bytes_that_are_not_utf_8_read_as_replacement_characters() -> None:
    report = delivery("non-utf8-headers.eml")

    assert report.recipients == (
        RecipientStatus(
            address="m\ufffdller@example.de",
            original=None,
            action="failed",
            status="5.1.1",
            diagnostic="smtp; 550 5.1.1 Benutzer m\ufffdller unbekannt \ufffd cause d'une erreur",
            remote_mta=None,
        ),
    )
    # The returned headers stay the bytes they were; read through, they are text.
    assert b"To: m\xfcller@example.de\r\n" in (report.original_headers or b"")
    assert returned_header(report.original_headers, "subject") == ["Gr\ufffd\ufffde"]


# Feedback reports.


def test_a_microsoft_jmrp_complaint() -> None:
    report = feedback("arf-microsoft-jmrp.eml")

    assert without_headers(report) == FeedbackReport(
        feedback_type="abuse",
        user_agent="Hotmail FBL",
        arrival_date="Fri, 29 Nov 2024 04:00:00 -0800",  # JMRP writes Received-Date
        original_rcpt_to=(),
        original_mail_from=None,
        source_ip="198.51.100.7",
        reported_domain=None,
        original_headers=None,
    )
    headers = report.original_headers
    assert returned_header(headers, "X-HmXmrOriginalRecipient") == ["<reader@hotmail.com>"]
    assert returned_header(headers, "message-id") == ["<deals-7@example.com>"]
    assert headers is not None
    assert headers.endswith(b"charset=utf-8\r\n")


def test_a_jmrp_complaint_with_the_original_as_its_only_part() -> None:
    report = feedback("arf-jmrp-original-only.eml")

    assert without_headers(report) == FeedbackReport(
        feedback_type="abuse",
        user_agent=None,
        arrival_date=None,
        original_rcpt_to=(),
        original_mail_from=None,
        source_ip=None,
        reported_domain=None,
        original_headers=None,
    )
    assert returned_header(report.original_headers, "message-id") == ["<deals-8@example.com>"]


def test_hotmails_older_complaint_in_a_multipart_mixed() -> None:
    report = feedback("jmrp-mixed.eml")

    assert report.feedback_type == "abuse"
    assert returned_header(report.original_headers, "x-hmxmroriginalrecipient") == [
        "reader@hotmail.com"
    ]
    assert returned_header(report.original_headers, "message-id") == ["<deals-9@example.com>"]


def test_a_yahoo_complaint() -> None:
    report = feedback("arf-yahoo.eml")

    assert without_headers(report) == FeedbackReport(
        feedback_type="abuse",
        user_agent="Yahoo!-Mail-Feedback/2.0",
        arrival_date="Fri, 29 Nov 2024 13:58:00 +0000",
        original_rcpt_to=("reader@yahoo.com",),
        original_mail_from="b-6c7d@bounces.example.com",
        source_ip=None,
        reported_domain="example.com",
        original_headers=None,
    )
    signature = returned_header(report.original_headers, "dkim-signature")
    assert len(signature) == 1
    assert signature[0].startswith("v=1; a=rsa-sha256;")
    assert "h=from:to:subject:message-id:date; bh=" in signature[0]  # unfolded


def test_a_gmail_like_complaint_names_its_feedback_id() -> None:
    report = feedback("arf-gmail.eml")

    assert without_headers(report) == FeedbackReport(
        feedback_type="abuse",
        user_agent="Gmail-FBL/1.0",
        arrival_date="Fri, 29 Nov 2024 14:55:00 +0000",
        original_rcpt_to=("first@gmail.com", "second@gmail.com"),
        original_mail_from="b-7e8f@bounces.example.com",
        source_ip="2001:db8::7",
        reported_domain="example.com",
        original_headers=None,
    )
    assert returned_header(report.original_headers, "Feedback-ID") == [
        "42:newsletter:example:pixelpost"
    ]


def test_a_complaint_with_the_recipient_redacted() -> None:
    report = feedback("arf-redacted.eml")

    assert without_headers(report) == FeedbackReport(
        feedback_type="fraud",
        user_agent="ExampleNet-FBL/0.3",
        arrival_date="Fri, 29 Nov 2024 15:50:00 +0000",
        original_rcpt_to=(),
        original_mail_from="b-8f9a@bounces.example.com",
        source_ip=None,
        reported_domain="example.com",
        original_headers=None,
    )
    assert returned_header(report.original_headers, "message-id") == ["<account-12@example.com>"]


def test_a_feedback_report_with_nothing_in_it_is_no_report() -> None:
    data = (
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nSomeone complained.\r\n--b--\r\n"
    )

    assert read_cleanly(data) == NotAReport(
        reason="a feedback report with neither its fields nor the original"
    )


# Bounces that are no report, found by flufl.bounce.


def test_a_qmail_bounce() -> None:
    report = delivery("qmail.eml")

    assert without_headers(report) == DeliveryReport(
        reporting_mta=None,
        arrival_date=None,
        recipients=(
            RecipientStatus(
                address="nobody@example.net",
                original=None,
                action="failed",
                status="5.1.1",
                diagnostic="<nobody@example.net>: 192.0.2.50 does not like recipient. Remote "
                "host said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User "
                "unknown Giving up on 192.0.2.50.",
                remote_mta=None,
            ),
            RecipientStatus(
                address="full@example.org",
                original=None,
                action="failed",
                status="5.2.2",
                diagnostic="<full@example.org>: The users mailfolder is over the allowed quota "
                "(size). (#5.2.2)",
                remote_mta=None,
            ),
        ),
        original_headers=None,
        standard=False,
        remote_mta_ip="192.0.2.50",
    )
    # After "--- Below this line is a copy of the message."
    assert report.original_headers is not None
    assert report.original_headers.startswith(b"Return-Path: <b-9a0b@bounces.example.com>\r\n")
    assert returned_header(report.original_headers, "message-id") == ["<order-5@example.com>"]
    assert kind(report, 0) == ("Permanent", "NoEmail")
    assert kind(report, 1) == ("Transient", "MailboxFull")


def test_an_old_postfix_bounce_in_a_multipart_mixed() -> None:
    report = delivery("postfix-old.eml")

    assert report.standard is False
    assert report.recipients == (
        RecipientStatus(
            address="moved@example.net",
            original=None,
            action="failed",
            status="5.1.6",
            diagnostic="<moved@example.net>: host mx.example.net[192.0.2.60] said: 550 5.1.6 "
            "<moved@example.net>... User has moved; no forwarding address",
            remote_mta=None,
        ),
    )
    assert report.remote_mta_ip == "192.0.2.60"
    assert returned_header(report.original_headers, "message-id") == ["<order-6@example.com>"]
    assert kind(report) == ("Permanent", "NoEmail")


def test_an_old_exim_bounce_that_says_auto_submitted() -> None:
    """Exim marks its bounces Auto-Submitted; from MAILER-DAEMON with
    X-Failed-Recipients, that is a bounce, not an auto-reply."""
    report = delivery("exim-plain.eml")

    assert report.standard is False
    assert [(r.address, r.action, r.status) for r in report.recipients] == [
        ("gone@example.org", "failed", "5.1.1")
    ]
    assert report.remote_mta_ip == "192.0.2.70"
    assert returned_header(report.original_headers, "message-id") == ["<order-13@example.com>"]


def test_an_exchange_ndr_with_the_original_attached() -> None:
    report = delivery("exchange-ndr.eml")

    # The address is named in the "To:" of the quoted message first; its own line, which
    # says what happened, is the one read.
    assert report.recipients == (
        RecipientStatus(
            address="someone@exchange.example.org",
            original=None,
            action="failed",
            status="5.0.0",
            diagnostic="someone@exchange.example.org on Fri, 29 Nov 2024 12:00:13 +0000 The "
            "recipient name is not recognized The MTS-ID of the original message is: c=us;a= "
            ";p=example;l=EXCH0112291200WXYZ1234 MSEXCH:IMS:Example:Site:EXCH 0 (000C05A6) "
            "Unknown Recipient",
            remote_mta=None,
        ),
    )
    assert returned_header(report.original_headers, "message-id") == ["<order-8@example.com>"]
    assert kind(report) == ("Permanent", "NoEmail")  # no status, but its words


def test_a_plain_bounce_that_names_no_status_is_undetermined() -> None:
    data = read("qmail.eml").replace(
        b"The users mailfolder is over the allowed quota (size). (#5.2.2)",
        b"Something went wrong there.",
    )
    report = read_cleanly(data)

    assert isinstance(report, DeliveryReport)
    assert report.recipients[1].status == "5.0.0"
    assert kind(report, 1) == ("Undetermined", "Undetermined")


def flufl(name: str) -> tuple[list[bytes], list[bytes]]:
    temporary, permanent = all_failures(BytesParser(policy=compat32).parsebytes(read(name)))
    return sorted(temporary), sorted(permanent)


def test_flufl_bounce_finds_the_plain_bounces() -> None:
    assert flufl("qmail.eml") == ([], [b"full@example.org", b"nobody@example.net"])
    assert flufl("postfix-old.eml") == ([], [b"moved@example.net"])
    assert flufl("exim-plain.eml") == ([], [b"gone@example.org"])
    assert flufl("exchange-ndr.eml") == ([], [b"someone@exchange.example.org"])


def test_where_flufl_bounce_is_wrong() -> None:
    # Its LLNL detector takes any ", a@b," for a failed address: an out-of-office text
    # "bounces". read_report takes it for the auto-reply it says it is, and shows the
    # detectors only mail from a mail system.
    assert flufl("auto-submitted.eml") == ([], [b"bob@example.net"])
    assert read_cleanly(read("auto-submitted.eml")) == AutoReply(
        reason="Auto-Submitted: auto-replied (vacation)"
    )
    letter = (
        b"From: Ann <ann@example.org>\r\nSubject: Lunch\r\n\r\n"
        b"Ask the others, bob@example.net, carol@example.net, about Friday.\r\n"
    )
    assert all_failures(message_from_bytes(letter, policy=compat32))[1] == {b"bob@example.net"}
    assert read_cleanly(letter) == NotAReport(
        reason="no multipart/report and no known bounce format"
    )
    # Its Postfix detector reads only a multipart's part described "Notification": a
    # Postfix bounce in plain text, with the headers after "--- Undelivered Message
    # Headers ---", is found by none of its detectors, so it is no report here either.
    assert flufl("postfix-old-plain.eml") == ([], [])
    assert read_cleanly(read("postfix-old-plain.eml")) == NotAReport(
        reason="no multipart/report and no known bounce format"
    )
    # Its DSN detector reads only the rfc822 address type: RFC 6533's utf-8 addresses,
    # and status fields in a text/plain part, are not seen (read_report reads them).
    assert flufl("global-dsn.eml") == ([], [])
    assert flufl("dsn-text-plain-status.eml") == ([], [])
    # And it names the Original-Recipient where there is one, not the Final-Recipient.
    assert flufl("multi-recipient-dsn.eml") == ([b"Slow@Example.org"], [b"full@example.net"])


@pytest.mark.parametrize(
    ("sender", "error"),
    [
        (b"", IndexError),  # its Yale detector, on a From that names nobody
        (b"From: M\xfcller <MAILER-DAEMON@example.org>\r\n", AttributeError),  # Sina's, Yahoo's
    ],
)
def test_flufl_bounce_raises_on_a_from_it_cannot_read_and_is_shown_one_it_can(
    sender: bytes, error: type[Exception]
) -> None:
    data = sender + b"Subject: failure notice\r\n\r\n" + read("qmail.eml").split(b"\r\n\r\n", 1)[1]
    with pytest.raises(error):
        all_failures(BytesParser(policy=compat32).parsebytes(data))

    report = read_cleanly(data)

    assert isinstance(report, DeliveryReport)
    assert [r.address for r in report.recipients] == ["nobody@example.net", "full@example.org"]


# Auto-replies.


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("auto-submitted.eml", "Auto-Submitted: auto-replied (vacation)"),
        ("x-autoreply.eml", "X-Autoreply"),
        ("x-autorespond.eml", "X-Autorespond"),
        ("precedence-auto-reply.eml", "Precedence: auto_reply"),
        (
            "x-auto-response-suppress.eml",
            "X-Auto-Response-Suppress, subject: Automatische Antwort",
        ),
        ("subject-out-of-office.eml", "subject: Out of Office"),
        ("subject-automatic-reply.eml", "subject: Automatic reply"),
        ("subject-auto.eml", "subject: Auto"),
        ("subject-abwesenheitsnotiz.eml", "subject: Abwesenheitsnotiz"),  # ISO-8859-1, encoded
        ("subject-reponse-automatique.eml", "subject: Réponse automatique"),  # UTF-8, encoded
        ("mdn.eml", "multipart/report; report-type=disposition-notification"),
    ],
)
def test_auto_replies(name: str, reason: str) -> None:
    assert read_cleanly(read(name)) == AutoReply(reason=reason)


def test_a_dsn_says_auto_submitted_and_is_a_report_still() -> None:
    data = read("postfix-dsn-rfc822.eml")

    assert b"\r\nAuto-Submitted: auto-replied\r\n" in header_section(data)
    assert isinstance(read_cleanly(data), DeliveryReport)


@pytest.mark.parametrize(
    "fields",
    [
        b"Auto-Submitted: no\r\nSubject: Your order\r\n",
        b"Subject: Re: Out of Office tomorrow?\r\n",  # a subject about it, not one
        b"Subject: Automatische Antwort: Your order\r\n",  # localized, without Exchange's field
        b"Precedence: bulk\r\nSubject: News\r\n",
    ],
)
def test_mail_that_is_no_auto_reply(fields: bytes) -> None:
    data = b"From: Ann <ann@example.org>\r\n" + fields + b"\r\nHello.\r\n"

    assert read_cleanly(data) == NotAReport(
        reason="no multipart/report and no known bounce format"
    )


# Whatever comes, an answer.


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n \t\r\n", "empty message"),
        (random.Random(0).randbytes(4096), "no multipart/report and no known bounce format"),
        (b"\xff\xfe\x00garbage\r\n\r\nmore", "no multipart/report and no known bounce format"),
        (
            b"Content-Type: multipart/report; report-type=tlsrpt; boundary=b\r\n\r\n--b--\r\n",
            "a multipart/report of report-type tlsrpt",
        ),
    ],
)
def test_what_is_no_report_says_why(data: bytes, reason: str) -> None:
    assert read_cleanly(data) == NotAReport(reason=reason)


def test_header_section_and_returned_header_take_anything() -> None:
    headers = (
        b"From sender@example.com Fri Nov 29 12:00:00 2024\r\n"  # an mbox line before it
        b"Received: from a\r\n\tby b;\r\n Fri, 29 Nov 2024\r\n"
        b"Subject: caf\xe9\r\n"
        b"RECEIVED: second\r\n"
        b"\r\n"
        b"Received: in the body\r\n"
    )

    assert header_section(headers) == (
        b"Received: from a\r\n\tby b;\r\n Fri, 29 Nov 2024\r\n"
        b"Subject: caf\xe9\r\n"
        b"RECEIVED: second\r\n"
    )
    assert returned_header(headers, "Received") == ["from a by b; Fri, 29 Nov 2024", "second"]
    assert returned_header(headers, "subject") == ["caf\ufffd"]
    assert returned_header(headers, "message-id") == []
    assert returned_header(None, "received") == []
    assert returned_header(b"\x00\xff no fields here", "received") == []
    assert header_section(b"") == b""
    assert header_section(b"not a field\r\n\r\n") == b""


# Properties: it never raises, and stays linear in what it is given.

FIXTURE_BYTES = [read(name) for name in sorted(KINDS)]

LINES = st.sampled_from(
    [
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b",
        b"Content-Type: multipart/mixed; boundary=c",
        b"Content-Type: message/delivery-status",
        b"Content-Type: message/feedback-report",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/rfc822-headers",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"--b",
        b"--b--",
        b"--c",
        b"--c--",
        b"",
        b" continued",
        b"Final-Recipient: rfc822; a@example.net",
        b"Original-Recipient: utf-8; \\x{110000}@example.net",
        b"Action: failed",
        b"Action: delayed",
        b"Status: 5.1.1",
        b"Diagnostic-Code: smtp; 550 5.2.2 full [192.0.2.1]",
        b"Remote-MTA: dns; [IPv6:2001:db8::1]",
        b"Feedback-Type: abuse",
        b"Original-Rcpt-To: <a@example.net>",
        b"From: MAILER-DAEMON@example.org",
        b"Subject: failure notice",
        b"Subject: =?utf-8?q?Automatic_reply?=",
        b"Auto-Submitted: auto-replied",
        b"X-Failed-Recipients: a@example.net",
        b"Hi. This is the qmail-send program at example.org.",
        b"<a@example.net>:",
        b"--- Below this line is a copy of the message.",
        b"Received: from x by y (pixelpost) with ESMTP id 0123",
        b"\xff\xfe caf\xe9",
        b"=?utf-8?b?!!!?=",
    ]
)


@given(st.binary(max_size=2048))
def test_any_bytes_are_read(data: bytes) -> None:
    read_cleanly(data)


@given(st.lists(LINES, max_size=60), st.sampled_from([b"\r\n", b"\n"]))
def test_any_arrangement_of_report_lines_is_read(lines: list[bytes], newline: bytes) -> None:
    read_cleanly(newline.join(lines))


@given(st.sampled_from(FIXTURE_BYTES), st.integers(min_value=0, max_value=8000))
def test_every_fixture_cut_anywhere_is_read(data: bytes, cut: int) -> None:
    read_cleanly(data[: cut % (len(data) + 1)])


@given(
    st.sampled_from(FIXTURE_BYTES),
    st.integers(min_value=0, max_value=8000),
    st.binary(min_size=1, max_size=8),
    st.booleans(),
)
def test_every_fixture_with_bytes_changed_is_read(
    data: bytes, at: int, inserted: bytes, replace: bool
) -> None:
    at %= len(data) + 1
    read_cleanly(data[:at] + inserted + data[at + (len(inserted) if replace else 0) :])


def test_a_10_mb_dsn_is_read_in_well_under_a_second() -> None:
    line = b"x" * 76 + b"\r\n"
    data = read("postfix-dsn-rfc822.eml").replace(
        b"Thank you for your order.\r\n", line * (10_000_000 // len(line))
    )
    assert len(data) > 10_000_000

    started = time.perf_counter()
    report = read_cleanly(data)
    elapsed = time.perf_counter() - started

    assert elapsed < 5
    assert isinstance(report, DeliveryReport)
    assert [r.address for r in report.recipients] == ["gone@example.net"]
    assert report.original_headers is not None
    assert report.original_headers.endswith(b"Content-Type: text/plain; charset=utf-8\r\n")


BOUNCE_START = b"From: MAILER-DAEMON@example.org\r\nSubject: failure notice\r\n\r\n"


@pytest.mark.parametrize(
    "data",
    [
        # A field after a field (the headers of a message are parsed once).
        b"From: a@example.org\r\n" + b"X-A: b\r\n" * 1_250_000 + b"\r\nbody",
        # A Content-Type whose parameters the standard library reads in quadratic time.
        b"Content-Type: multipart/report; "
        + b'a="b;"; ' * 1_250_000
        + b"boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n",
        # Two million parts, and two hundred thousand nested multiparts.
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        + b"--b\r\n" * 2_000_000,
        b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
            for i in range(200_000)
        ),
        # A bounce of one long line, and of lines on which a detector's pattern backtracks.
        BOUNCE_START + b"did not reach the following recipient\r\n" + b"a" * 10_000_000,
        BOUNCE_START
        + b"did not reach the following recipient\r\n"
        + (b"a" * 500 + b"@" + b"b" * 497 + b"\r\n") * 10_000,
        # A qmail bounce returning 10 MB.
        read("qmail.eml") + (b"y" * 76 + b"\r\n") * 128_000,
    ],
    ids=["fields", "content-type", "parts", "nesting", "long-line", "backtracking", "qmail"],
)
def test_hostile_10_mb_messages_are_read_in_linear_time(data: bytes) -> None:
    started = time.perf_counter()
    read_cleanly(data)

    assert time.perf_counter() - started < 5


def test_the_corpus_messages_are_read_and_none_of_them_bounces(corpus: Path) -> None:
    """The corpus holds no report today (tests/conftest.py, ../shared/corpus/README.md):
    its messages, malformed ones included, are read, and none of them that comes from
    no mail system is taken for a bounce."""
    messages = sorted((corpus / "mime").glob("*.eml"))
    assert len(messages) >= 100
    for path in messages:
        data = path.read_bytes()
        report = read_cleanly(data)
        lowered = data.lower()
        if b"multipart/report" not in lowered and b"mailer-daemon" not in lowered:
            assert not isinstance(report, DeliveryReport | FeedbackReport), path.name


def test_the_remote_servers_address_is_never_the_one_a_refusal_names_as_its_client() -> None:
    """`Client host [ip] blocked`: that address is the sender's own, not the remote
    MTA's; a server written `host[ip]` or `host [ip]` is the remote one."""
    from pixelpost.core.reports.delivery import server_ip_in  # noqa: PLC0415

    blocked = "smtp; 554 5.7.1 Client host [198.51.100.7] blocked using zen.spamhaus.org"
    assert server_ip_in(blocked) is None
    assert server_ip_in("connect to mx.example.org[192.0.2.26]:25: timed out") == "192.0.2.26"
    assert server_ip_in("host mx.example.org [192.0.2.70]: 550 5.1.1") == "192.0.2.70"
    assert server_ip_in("192.0.2.50 does not like recipient.", bare=True) == "192.0.2.50"
    assert server_ip_in(f"{blocked}; then mx.example.org[192.0.2.9]") == "192.0.2.9"
