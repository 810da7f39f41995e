"""Mail that comes back: copies go out from their own return path, and the intake turns
the reports sent to it into Bounce and Complaint events and suppressions. Real relays,
a real intake, a real aiosmtpd upstream and the real SQLite store."""

from __future__ import annotations

import json
import re
import sqlite3
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from pixelpost.config import Config, parse_config_text
from pixelpost.core.dsn import Failure, notification
from pixelpost.core.ids import new_message_id
from pixelpost.core.reports import read_report
from pixelpost.core.suppression import Reason
from pixelpost.store import MessageRecord, SQLiteStore
from relay.intake.returns import header_copies
from tests.conftest import (
    FIXTURES,
    RelayStarter,
    RunningRelay,
    codec_for,
    config_text,
    events_of,
    published,
    recorded,
    until,
)
from tests.integration.conftest import IntakeStarter
from tests.integration.test_relay_passthrough import MESSAGE
from tests.integration.test_relay_passthrough import send as send_plain
from tests.integration.test_tracking_relay import newsletter
from tests.integration.test_tracking_relay import send as send_tracked
from tests.sink import Arrival, SinkHandler

RETURN_DOMAIN = "bounces.example.com"
FEEDBACK_DOMAIN = "fbl.example.com"


def intake_config(
    upstream_url: str, tmp_path: Path, *, marketing: str = "", intake: str = "", relay: str = ""
) -> Config:
    """The tests' usual configuration, with the marketing set sending from its own
    return paths and an intake on a free port."""
    text = config_text(upstream_url, tmp_path, relay=relay).replace(
        "[config_sets.marketing]\n",
        f'[config_sets.marketing]\nreturn_path_domain = "{RETURN_DOMAIN}"\n{marketing}\n',
    )
    text += f'\n[intake]\nlisten = "127.0.0.1:0"\ndomains = ["{FEEDBACK_DOMAIN}"]\n{intake}\n'
    return parse_config_text(text, environ={})


async def submit(port: int, rcpts: list[str], message: bytes, sender: str = "") -> str:
    """Hand a returned message to the intake as a reporting MTA does; the final reply."""
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="mx.example.org"
    ) as client:
        await client.mail(sender)
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        reply = await client.data(message)
        return f"{reply.code} {reply.message}"


def dsn_for(copy: bytes, *, to: str, recipient: str, status: str = "5.1.1") -> bytes:
    """The report a recipient's server writes for `copy`, returning its headers."""
    return notification(
        original=copy,
        sender=to,
        failures=[
            Failure(
                recipient=recipient,
                status=status,
                diagnostic=f"550 {status} <{recipient}>: Recipient address rejected: "
                "User unknown in local recipient table",
                remote_mta="mx.example.org",
            )
        ],
        reporting_mta="mx.example.org",
        arrival=datetime.now(UTC),
    )


def arf_for(
    copy: bytes, *, recipient: str | None, feedback_type: str = "abuse", to: str = ""
) -> bytes:
    """A feedback report as Yahoo's feedback loop sends it (RFC 5965), with the whole
    copy returned; `recipient` None: left out, as some providers redact it."""
    boundary = "----=_Part_feedback_report"
    rcpt = f"Original-Rcpt-To: {recipient}\r\n" if recipient else ""
    return (
        (
            "From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>\r\n"
            f"To: {to or 'fbl@' + FEEDBACK_DOMAIN}\r\n"
            "Subject: FW: Welcome\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            "Message-ID: <arf-1@arf.mail.yahoo.com>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report;\r\n"
            f' boundary="{boundary}"\r\n'
            "\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "This is an email abuse report for an email message received from IP 192.0.2.25\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: {feedback_type}\r\n"
            "User-Agent: Yahoo!-Mail-Feedback/2.0\r\n"
            "Version: 1\r\n"
            "Original-Mail-From: <news@example.com>\r\n"
            f"{rcpt}"
            "Arrival-Date: Thu, 03 Dec 2026 09:58:00 +0000\r\n"
            "Source-IP: 192.0.2.25\r\n"
            "Reported-Domain: example.com\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/rfc822\r\n"
            "Content-Disposition: inline\r\n\r\n"
        ).encode()
        + copy
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def record_copy(
    store: SQLiteStore, copy_id: str, destination: list[str], *, config_set: str
) -> None:
    """A copy's record, as the relay writes it once the copy has gone out."""
    mail = {"messageId": copy_id, "destination": destination, "tags": {}}
    record = MessageRecord(
        id=copy_id, config_set=config_set, created_at=datetime.now(UTC), mail=json.dumps(mail)
    )
    await store.record(messages=[record])


async def send_one(
    relay: RunningRelay,
    handler: SinkHandler,
    store: SQLiteStore,
    recipient: str,
    *,
    config_set: str = "marketing",
) -> Arrival:
    """Send the newsletter to one recipient through `relay`; its copy as the upstream
    got it, once its Delivery is recorded."""
    delivered = [kind for kind, _, _ in recorded(store)].count("delivery")
    await send_tracked(relay.address.port, newsletter(config_set=config_set), [recipient])
    await events_of(store, delivery=delivered + 1)
    [arrival] = [a for a in handler.arrivals if recipient in a.rcpt_tos]
    return arrival


def return_paths(handler: SinkHandler) -> dict[str, str]:
    """Each recipient's envelope sender, as the upstream saw it."""
    return {a.rcpt_tos[0]: a.mail_from for a in handler.arrivals}


def copy_to(handler: SinkHandler, recipient: str) -> bytes:
    [copy] = [a.content for a in handler.arrivals if recipient in a.rcpt_tos]
    return copy


async def test_a_dsn_to_a_return_path_is_the_copys_bounce_and_suppresses_the_address(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, counts = await start_intake_server(config)
    codec = codec_for(config)

    await send_tracked(
        relay.address.port,
        newsletter(config_set="marketing"),
        ["a@example.org", "gone@example.org"],
    )
    await events_of(store, delivery=2)
    paths = return_paths(handler)
    # Each copy goes out from its own return path, naming it.
    assert set(paths) == {"a@example.org", "gone@example.org"}
    for address in paths.values():
        assert re.fullmatch(rf"b-[a-z2-7]{{45}}@{re.escape(RETURN_DOMAIN)}", address)
    gone_copy = codec.read_return_address(paths["gone@example.org"])

    reply = await submit(
        intake.address.port,
        [paths["gone@example.org"].upper()],  # a server that changes the case of it
        dsn_for(
            copy_to(handler, "gone@example.org"),
            to=paths["gone@example.org"],
            recipient="gone@example.org",
        ),
    )
    assert reply.startswith("250 2.0.0")

    events = await events_of(store, bounce=1)
    [(_, message_id, bounce)] = [e for e in events if e[0] == "bounce"]
    assert message_id == gone_copy
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "NoEmail")
    [bounced] = bounce["bouncedRecipients"]
    assert bounced["emailAddress"] == "gone@example.org"
    assert bounced["status"] == "5.1.1"
    assert "User unknown" in bounced["diagnosticCode"]
    assert bounce["reportingMTA"] == "dns; mx.example.org"
    [event] = [e for e in await published(store) if e["eventType"] == "Bounce"]
    assert event["mail"]["messageId"] == gone_copy
    assert event["mail"]["destination"] == ["gone@example.org"]
    assert event["mail"]["tags"]["campaign"] == ["welcome"]
    entry = await store.suppression("gone@example.org")
    assert entry is not None
    assert (entry.reason, entry.message_id) == (Reason.BOUNCE, gone_copy)
    assert counts.counts["bounce"] == 1

    # The next message to the address is not sent to it.
    await send_tracked(
        relay.address.port, newsletter(config_set="marketing"), ["gone@example.org"]
    )
    events = await events_of(store, bounce=2)
    assert events[-1][2]["bounceSubType"] == "OnAccountSuppressionList"
    await until(relay.idle, "the relay idle")
    assert len(handler.arrivals) == 2


async def test_a_feedback_report_matched_by_the_returned_headers_is_a_complaint(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """Without a return path of its own (the default set) a copy is found by the
    `Received:` field the relay put on it, which the report returns."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)

    arrival = await send_one(relay, handler, store, "jane@example.org", config_set="default")
    assert arrival.mail_from == "news@example.com"  # the sender's own, kept
    copy = arrival.content

    reply = await submit(
        intake.address.port,
        [f"fbl@{FEEDBACK_DOMAIN}"],
        arf_for(copy, recipient="jane@example.org"),
        sender="feedback@arf.mail.yahoo.com",
    )
    assert reply.startswith("250")

    [(_, message_id, complaint)] = [
        e for e in await events_of(store, complaint=1) if e[0] == "complaint"
    ]
    [(send_id)] = [m for kind, m, _ in recorded(store) if kind == "send"]
    assert message_id == send_id
    assert complaint["complainedRecipients"] == [{"emailAddress": "jane@example.org"}]
    assert complaint["complaintFeedbackType"] == "abuse"
    assert complaint["userAgent"] == "Yahoo!-Mail-Feedback/2.0"
    assert complaint["arrivalDate"] == "2026-12-03T09:58:00.000Z"
    assert complaint["complaintSubType"] is None
    entry = await store.suppression("jane@example.org")
    assert entry is not None
    assert entry.reason is Reason.COMPLAINT


async def test_a_redacted_report_names_the_copys_recipient_and_not_spam_suppresses_nobody(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "r@example.org", config_set="marketing")

    await submit(
        intake.address.port,
        [arrival.mail_from],
        arf_for(arrival.content, recipient=None, feedback_type="not-spam"),
    )

    [(_, _, complaint)] = [e for e in await events_of(store, complaint=1) if e[0] == "complaint"]
    assert complaint["complainedRecipients"] == [{"emailAddress": "r@example.org"}]
    assert complaint["complaintFeedbackType"] == "not-spam"
    assert await store.suppression("r@example.org") is None


async def test_a_set_that_suppresses_on_nothing_records_the_bounce_only(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path, marketing="suppress_on = []")
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "x@example.org", config_set="marketing")

    await submit(
        intake.address.port,
        [arrival.mail_from],
        dsn_for(arrival.content, to=arrival.mail_from, recipient="x@example.org"),
    )

    await events_of(store, bounce=1)
    assert await store.suppression("x@example.org") is None


async def test_the_intake_is_no_relay_and_refuses_forged_return_paths(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """An open-relay sweep: every recipient outside the return-path domains is refused
    at RCPT, and a return path whose token does not verify too; nothing goes anywhere."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, counts = await start_intake_server(config)
    codec = codec_for(config)
    good = codec.return_address(new_message_id(), RETURN_DOMAIN)
    token = good[2:47]
    changed = "a" if token[40] != "a" else "b"  # a character of the signature
    forged = f"b-{token[:40]}{changed}{token[41:]}@{RETURN_DOMAIN}"
    sweep = [
        "victim@example.org",
        f"victim@{RETURN_DOMAIN}.evil.example",
        f"victim@sub.{RETURN_DOMAIN}",
        '"victim@example.org"@example.net',
        "victim%example.org@example.net",
        "postmaster@localhost",
    ]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.address.port) as client:
        await client.mail("")
        for rcpt in sweep:
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(rcpt)
            assert refused.value.code == 550, rcpt
            assert "Relay access denied" in refused.value.message
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(forged)
        assert (refused.value.code, refused.value.message) == (550, "5.1.1 No such return path")
        reply = await client.rcpt(good)
        assert reply.code == 250
    assert counts.counts["forged"] == 1
    assert handler.arrivals == []
    assert recorded(store) == []


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        (b"\x00\xff garbage \r\n\r\n\x80\x81", "not_a_report"),
        (
            b"From: jane@example.org\r\nTo: news@example.com\r\nSubject: Out of Office\r\n"
            b"Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n",
            "auto_reply",
        ),
        (
            b"From: MAILER-DAEMON@example.org\r\nSubject: failure\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
            b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            b"Final-Recipient: rfc822; gone@exam",
            "unmatched",
        ),
    ],
    ids=["garbage", "auto-reply", "truncated"],
)
async def test_what_is_no_report_on_a_copy_is_taken_and_recorded_as_nothing(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
    message: bytes,
    outcome: str,
) -> None:
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, counts = await start_intake_server(config)

    reply = await submit(intake.address.port, [f"fbl@{FEEDBACK_DOMAIN}"], message)

    assert reply.startswith("250")
    assert counts.counts == {outcome: 1}
    assert recorded(store) == []


async def test_a_report_on_a_copy_the_store_does_not_know_makes_no_event(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """A copy purged from the store long ago (or never recorded): its token verifies,
    but there is no configuration set to route an event by."""
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, counts = await start_intake_server(config)
    long_ago = time.time() - config.relay.max_queue_lifetime - 2 * 3600
    path = codec_for(config).return_address(new_message_id(long_ago), RETURN_DOMAIN)

    reply = await submit(
        intake.address.port, [path], dsn_for(MESSAGE, to=path, recipient="a@example.org")
    )

    assert reply.startswith("250")
    assert counts.counts == {"unknown_copy": 1}
    assert recorded(store) == []
    assert await store.suppression("a@example.org") is None


async def test_a_report_that_outruns_its_copys_record_is_deferred_then_taken(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """An upstream that bounces at once can return its report before the relay has
    recorded the copy (that happens once the delivery attempt is over): the report is
    deferred with a 451, and taken when the reporting server tries again."""
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, counts = await start_intake_server(config)
    copy_id = new_message_id()
    path = codec_for(config).return_address(copy_id, RETURN_DOMAIN)
    report = dsn_for(MESSAGE, to=path, recipient="fast@example.org")

    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await submit(intake.address.port, [path], report)
    assert deferred.value.code == 451
    assert counts.counts == {"deferred": 1}

    await record_copy(store, copy_id, ["fast@example.org"], config_set="marketing")
    assert (await submit(intake.address.port, [path], report)).startswith("250")
    [(_, message_id, _)] = [e for e in await events_of(store, bounce=1) if e[0] == "bounce"]
    assert message_id == copy_id


async def test_a_report_over_the_size_limit_is_refused_and_a_store_failure_deferred(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "y@example.org", config_set="marketing")
    report = dsn_for(arrival.content, to=arrival.mail_from, recipient="y@example.org")

    huge = report + b"x" * (10 * 1024 * 1024)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await submit(intake.address.port, [arrival.mail_from], huge)
    assert refused.value.code == 552

    with sqlite3.connect(store.path) as connection:
        connection.execute("DROP TABLE events")
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await submit(intake.address.port, [arrival.mail_from], report)
    assert deferred.value.code == 451


async def test_a_notification_through_the_relay_is_relayed_untracked_and_bounces_its_copy(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """A Postfix in front sends its own DSNs through its relay host: from the null
    reverse path, about a copy pixelpost sent. It goes on as it came (no Send, no
    tracking), and the copy it reports on gets its Bounce."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    plain = MESSAGE.replace(b"X-Config-Set: marketing", b"X-Config-Set: default")
    await send_plain(relay.address.port, plain, rcpts=["lost@example.org"])
    await events_of(store, delivery=1)
    [arrival] = handler.arrivals
    [copy_id] = [m for kind, m, _ in recorded(store) if kind == "send"]
    report = dsn_for(arrival.content, to="sender@example.com", recipient="lost@example.org")

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.sendmail("", ["sender@example.com"], report)

    events = await events_of(store, bounce=1)
    assert [(kind, m) for kind, m, _ in events if kind == "bounce"] == [("bounce", copy_id)]
    await until(lambda: len(handler.arrivals) == 2, "the notification relayed")
    relayed = handler.arrivals[1]
    assert (relayed.mail_from, relayed.rcpt_tos) == ("<>", ["sender@example.com"])
    assert relayed.content.endswith(report)
    assert [kind for kind, _, _ in recorded(store)].count("send") == 1
    assert json.loads(json.dumps(events[-1][2]))["bouncedRecipients"][0]["emailAddress"] == (
        "lost@example.org"
    )


async def test_a_report_on_a_copy_past_retention_names_nobody(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """Retention has cut the copy's record to a stub (no recipients, no headers): the
    addresses a report names can no longer be checked against the copy's, so nobody is
    bounced or suppressed on its word (it could name anyone)."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, counts = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "old@example.org", config_set="marketing")
    copy_id = codec_for(config).read_return_address(arrival.mail_from)
    await store.route([])  # routed (to no destination) and counted: retention may cut
    await store.rollup()
    await store.purge(before=datetime.now(UTC).timestamp() + 60)
    stub = await store.message(copy_id)
    assert stub is not None
    assert json.loads(stub.mail) == {"messageId": copy_id}

    reply = await submit(
        intake.address.port,
        [arrival.mail_from],
        dsn_for(arrival.content, to=arrival.mail_from, recipient="victim@example.org"),
    )

    assert reply.startswith("250")
    assert counts.counts == {"past_retention": 1}
    assert "bounce" not in [kind for kind, _, _ in recorded(store)]
    assert await store.suppression("victim@example.org") is None


async def test_a_report_that_returns_a_9_mb_original_bounces_its_copy(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """A DSN that returns a whole 9 MB original (within intake.max_message_bytes)."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "big@example.org", config_set="marketing")
    report = (
        dsn_for(arrival.content, to=arrival.mail_from, recipient="big@example.org")
        .replace(b"text/rfc822-headers", b"message/rfc822")
        .rstrip(b"\r\n")
    )
    closing = report.rindex(b"\r\n--")
    large = (
        report[:closing] + b"\r\n\r\n" + (b"A" * 998 + b"\r\n") * 9000 + report[closing:] + b"\r\n"
    )
    assert len(large) > 9_000_000

    reply = await submit(intake.address.port, [arrival.mail_from], large)

    assert reply.startswith("250")
    [(_, _, bounce)] = [e for e in await events_of(store, bounce=1) if e[0] == "bounce"]
    assert bounce["bouncedRecipients"][0]["emailAddress"] == "big@example.org"


async def test_the_intake_offers_starttls_with_the_relays_certificate_and_no_auth(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    ca: trustme.CA,
    ca_file: Path,
) -> None:
    _, port = sink
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "relay.crt", tmp_path / "relay.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    config = intake_config(
        f"smtp://127.0.0.1:{port}", tmp_path, relay=f'[relay.tls]\ncert = "{cert}"\nkey = "{key}"'
    )
    intake, _ = await start_intake_server(config)
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=intake.address.port, start_tls=True, tls_context=context
    ) as client:
        assert client.get_transport_info("sslcontext") is not None
        assert not client.supports_extension("auth")
        await client.mail("")
        assert (await client.rcpt(f"fbl@{FEEDBACK_DOMAIN}")).code == 250


def with_copy_id(report: bytes, copy_id: str, recipient: str) -> bytes:
    """`report` with the relay's `Received:` field on top of the message it returns, as
    a copy that pixelpost sent carries it."""
    part = re.search(rb"Content-Type: (message/rfc822|text/rfc822-headers)[^\r\n]*\r\n", report)
    assert part is not None
    start = report.index(b"\r\n\r\n", part.start()) + 4
    received = (
        f"Received: from app ([10.0.0.5])\r\n\tby relay.test (pixelpost) with ESMTP id "
        f"{copy_id}\r\n\tfor <{recipient}>; Fri, 29 Nov 2024 12:00:00 +0000\r\n"
    ).encode()
    return report[:start] + received + report[start:]


@pytest.mark.parametrize(
    ("fixture", "recipient", "event", "kind"),
    [
        ("arf-gmail", "first@gmail.com", "complaint", "abuse"),
        ("arf-microsoft-jmrp", "reader@hotmail.com", "complaint", "abuse"),
        ("arf-jmrp-original-only", "reader@outlook.com", "complaint", "abuse"),
        ("arf-yahoo", "reader@yahoo.com", "complaint", "abuse"),
        ("arf-redacted", "someone@example.net", "complaint", "fraud"),
        ("postfix-dsn-rfc822", "gone@example.net", "bounce", "Permanent/NoEmail"),
        ("office365-dsn", "someone@contoso.com", "bounce", "Permanent/NoEmail"),
        ("exchange-ndr", "someone@exchange.example.org", "bounce", "Permanent/NoEmail"),
        ("qmail", "nobody@example.net", "bounce", "Permanent/NoEmail"),
        ("postfix-old", "moved@example.net", "bounce", "Permanent/NoEmail"),
    ],
)
async def test_reports_as_providers_send_them_reach_their_copy(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
    fixture: str,
    recipient: str,
    event: str,
    kind: str,
) -> None:
    """Each provider's format, as its documentation shows it, to a feedback-loop or
    bounce mailbox address: matched by the copy id the returned headers carry (a copy
    of a set without a return path, of one recipient)."""
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, counts = await start_intake_server(config)
    report = (FIXTURES / "reports" / f"{fixture}.eml").read_bytes()
    copy_id = new_message_id()
    found = header_copies(read_report(report).original_headers)  # type: ignore[union-attr]
    report = (
        report.replace(found[0].encode(), copy_id.encode())
        if found
        else (with_copy_id(report, copy_id, recipient))
    )
    await record_copy(store, copy_id, [recipient], config_set="default")

    assert (await submit(intake.address.port, [f"fbl@{FEEDBACK_DOMAIN}"], report)).startswith(
        "250"
    )

    [(_, message_id, detail)] = [e for e in await events_of(store, **{event: 1}) if e[0] == event]
    assert message_id == copy_id
    assert counts.counts == {event: 1}
    if event == "complaint":
        assert detail["complainedRecipients"] == [{"emailAddress": recipient}]
        assert detail["complaintFeedbackType"] == kind
        entry = await store.suppression(recipient)
        assert entry is not None
        assert entry.reason is Reason.COMPLAINT
    else:
        assert f"{detail['bounceType']}/{detail['bounceSubType']}" == kind
        assert detail["bouncedRecipients"][0]["emailAddress"] == recipient
        listed = await store.suppression(recipient)
        assert (listed is not None) == (detail["bounceType"] == "Permanent")


async def test_a_dsn_relayed_to_a_return_path_is_taken_once_by_the_intake(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """A Postfix in front sends its DSN for a copy with a return path through the relay:
    the relay passes it on to the return path (here: to the upstream, whose MX for the
    bounce domain would be the intake) and records nothing; the intake takes it once."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "t@example.org", config_set="marketing")
    report = dsn_for(arrival.content, to=arrival.mail_from, recipient="t@example.org")

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.sendmail("", [arrival.mail_from], report)
    await until(lambda: len(handler.arrivals) == 2, "the DSN passed on")
    await until(relay.idle, "the relay idle")
    assert "bounce" not in [kind for kind, _, _ in recorded(store)]

    relayed = handler.arrivals[1]
    assert relayed.rcpt_tos == [arrival.mail_from]
    await submit(intake.address.port, relayed.rcpt_tos, relayed.content)
    events = await events_of(store, bounce=1)
    assert [kind for kind, _, _ in events].count("bounce") == 1


async def test_a_report_by_headers_suppresses_only_the_recipient_of_a_copy_of_one(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """A copy to several recipients (untracked, no return path) is seen by all of them:
    a report that names it by its headers could come from any, so it is published but
    suppresses nobody; a DSN naming an address the copy did not go to names nobody."""
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    intake, _ = await start_intake_server(config)
    shared = MESSAGE.replace(b"X-Config-Set: marketing", b"X-Config-Set: untracked")
    await send_plain(relay.address.port, shared, rcpts=["boss@example.org", "me@example.org"])
    await events_of(store, delivery=1)
    [arrival] = handler.arrivals
    assert sorted(arrival.rcpt_tos) == ["boss@example.org", "me@example.org"]

    forged = dsn_for(arrival.content, to="sender@example.com", recipient="boss@example.org")
    await submit(intake.address.port, [f"bounces@{FEEDBACK_DOMAIN}"], forged)
    stranger = dsn_for(arrival.content, to="sender@example.com", recipient="x@example.net")
    await submit(intake.address.port, [f"bounces@{FEEDBACK_DOMAIN}"], stranger)
    complaint = arf_for(arrival.content, recipient=None)
    await submit(intake.address.port, [f"fbl@{FEEDBACK_DOMAIN}"], complaint)

    events = await events_of(store, bounce=1, complaint=1)
    [bounce] = [detail for kind, _, detail in events if kind == "bounce"]
    assert [r["emailAddress"] for r in bounce["bouncedRecipients"]] == ["boss@example.org"]
    [complained] = [detail for kind, _, detail in events if kind == "complaint"]
    assert len(complained["complainedRecipients"]) == 2
    assert await store.suppression_list() == []


async def test_one_report_with_two_kinds_of_failure_is_two_bounces(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """SES has one bounce type per event: a mailbox full (Transient) and an unknown
    user (Permanent) in one DSN are two events, and only the Permanent one suppresses,
    whichever comes first."""
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, _ = await start_intake_server(config)
    copy_id = new_message_id()
    await record_copy(
        store, copy_id, ["full@example.org", "gone@example.org"], config_set="default"
    )
    path = codec_for(config).return_address(copy_id, RETURN_DOMAIN)
    report = notification(
        original=MESSAGE,
        sender=path,
        failures=[
            Failure(recipient="full@example.org", status="5.2.2", diagnostic="552 5.2.2 full"),
            Failure(recipient="gone@example.org", status="5.1.1", diagnostic="550 5.1.1 gone"),
        ],
        reporting_mta="mx.example.org",
        arrival=datetime.now(UTC),
    )

    await submit(intake.address.port, [path], report)

    events = await events_of(store, bounce=2)
    kinds = {
        (d["bounceType"], d["bounceSubType"]): [r["emailAddress"] for r in d["bouncedRecipients"]]
        for kind, _, d in events
        if kind == "bounce"
    }
    assert kinds == {
        ("Transient", "MailboxFull"): ["full@example.org"],
        ("Permanent", "NoEmail"): ["gone@example.org"],
    }
    assert [e.address for e in await store.suppression_list()] == ["gone@example.org"]


async def test_unreadable_mail_from_the_null_sender_to_a_return_path_is_undetermined(
    sink: tuple[SinkHandler, int],
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    _, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    intake, _ = await start_intake_server(config)
    copy_id = new_message_id()
    await record_copy(store, copy_id, ["who@example.org"], config_set="marketing")
    path = codec_for(config).return_address(copy_id, RETURN_DOMAIN)
    unreadable = b"Subject: ???\r\n\r\nSomething went wrong with your message.\r\n"

    await submit(intake.address.port, [path], unreadable, sender="")
    await submit(intake.address.port, [path], unreadable, sender="someone@example.net")

    [(_, _, bounce)] = [e for e in await events_of(store, bounce=1) if e[0] == "bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Undetermined", "Undetermined")
    assert bounce["bouncedRecipients"] == [{"emailAddress": "who@example.org"}]
    assert "reportingMTA" not in bounce
    assert await store.suppression("who@example.org") is None
