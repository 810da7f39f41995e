"""The relay between a real SMTP client (aiosmtplib) and a real upstream (aiosmtpd)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import threading
from pathlib import Path

import aiosmtplib
import pytest

from pixelpost.store import SQLiteStore
from relay.delivery import ForwardingDelivery, Submission
from relay.headers import parse_header_section
from relay.upstream import open_transport
from tests.conftest import RelayStarter, SinkStarter, make_config
from tests.net import free_port
from tests.sink import SinkHandler

MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: rcpt@example.org\r\n"
    b"X-Config-Set: marketing\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"X-Message-Tags: campaign=spring,\r\n"
    b" team=growth\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b"X-Config-Set: this line is body text and stays\r\n"
    b"..a line that began with a dot\r\n"
)


async def send(port: int, message: bytes, *, rcpts: list[str] | None = None) -> str:
    """Send and return the server's final reply; raise what aiosmtplib raises."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        _, reply = await client.sendmail(
            "sender@example.com", rcpts or ["rcpt@example.org"], message
        )
        return reply


async def test_message_arrives_byte_identical_but_for_control_headers_and_received(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE)

    await handler.wait(1)
    arrived = handler.arrivals[0].content
    first_line_end = arrived.index(b"\r\n") + 2
    received_end = parse_header_section(arrived).fields[0].end
    assert arrived[:first_line_end].startswith(b"Received: from ")
    assert b"by relay.test (pixelpost) with ESMTP id " in arrived[:received_end]
    assert b"for <rcpt@example.org>;" in arrived[:received_end]
    expected = MESSAGE.replace(b"X-Config-Set: marketing\r\n", b"", 1).replace(
        b"X-Message-Tags: campaign=spring,\r\n team=growth\r\n", b""
    )
    assert arrived[received_end:] == expected
    assert handler.arrivals[0].rcpt_tos == ["rcpt@example.org"]
    assert handler.arrivals[0].mail_from == "sender@example.com"


class Recording:
    """The real forwarding delivery, remembering what it was given."""

    def __init__(self, inner: ForwardingDelivery) -> None:
        self.inner = inner
        self.submissions: list[Submission] = []

    async def submit(self, submission: Submission) -> str:
        self.submissions.append(submission)
        return await self.inner.submit(submission)


@pytest.mark.parametrize(
    ("header", "expected_set"),
    [
        (b"X-Config-Set: marketing\r\n", "marketing"),
        (b"x-ses-configuration-set:   marketing  \r\n", "marketing"),
        (b"X-SES-CONFIGURATION-SET: marketing\r\nX-Config-Set: default\r\n", "marketing"),
        (b"", "default"),
    ],
)
async def test_configuration_set_and_tags_are_read(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    header: bytes,
    expected_set: str,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    recording = Recording(
        ForwardingDelivery(
            transport=open_transport(config.upstream, local_hostname="relay.test"),
            recorder=store,
            hostname="relay.test",
        )
    )
    relay = await start_relay(config, delivery=recording)

    message = header + b"X-SES-MESSAGE-TAGS: a=1, b=two\r\nSubject: hi\r\n\r\nbody\r\n"
    await send(relay.address.port, message)

    [submission] = recording.submissions
    assert submission.config_set is not None
    assert submission.config_set.name == expected_set
    tags = json.loads(submission.copies[0].mail)["tags"]
    assert (tags["a"], tags["b"], tags["ses:configuration-set"]) == (
        ["1"],
        ["two"],
        [expected_set],
    )
    await handler.wait(1)
    upstream_headers = handler.arrivals[0].content.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-config-set" not in upstream_headers
    assert b"x-ses-" not in upstream_headers


async def test_no_header_and_no_default_set_relays_untracked(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    config = dataclasses.replace(
        make_config(f"smtp://127.0.0.1:{port}", tmp_path), default_config_set=None
    )
    recording = Recording(
        ForwardingDelivery(
            transport=open_transport(config.upstream, local_hostname="relay.test"),
            recorder=store,
            hostname="relay.test",
        )
    )
    relay = await start_relay(config, delivery=recording)

    await send(relay.address.port, b"Subject: hi\r\n\r\nbody\r\n")

    assert recording.submissions[0].config_set is None
    await handler.wait(1)


async def test_unknown_configuration_set_is_refused_by_name_and_nothing_is_forwarded(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(relay.address.port, b"X-Config-Set: nosuch\r\nSubject: x\r\n\r\nbody\r\n")

    assert refused.value.code == 554
    assert '"nosuch"' in refused.value.message
    assert handler.data_attempts == 0
    assert handler.arrivals == []


async def test_client_outside_allow_networks_is_refused_at_rcpt(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    config = make_config(
        f"smtp://127.0.0.1:{port}", tmp_path, relay='allow_networks = ["10.0.0.0/8"]'
    )
    relay = await start_relay(config)

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.mail("sender@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("rcpt@example.org")
        with pytest.raises(aiosmtplib.SMTPResponseException) as no_data:
            await client.data(b"Subject: x\r\n\r\nbody\r\n")
    assert refused.value.code == 554
    assert "Relay access denied" in refused.value.message
    assert no_data.value.code == 503
    assert handler.arrivals == []


async def test_upstream_unreachable_gets_451(start_relay: RelayStarter, tmp_path: Path) -> None:
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{free_port()}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await send(relay.address.port, MESSAGE)

    assert deferred.value.code == 451


@pytest.mark.parametrize(
    ("upstream_reply", "expected_code", "expected_text"),
    [
        ("452 4.3.1 Insufficient system storage", 451, "4.3.1 Insufficient system storage"),
        ("552 5.3.4 Message too big for system", 554, "5.3.4 Message too big for system"),
        ("554 5.7.1 Spam detected", 554, "5.7.1 Spam detected"),
    ],
)
async def test_upstream_reply_to_data_maps_to_client_reply(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    upstream_reply: str,
    expected_code: int,
    expected_text: str,
) -> None:
    handler, port = sink
    handler.data_reply = upstream_reply
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await send(relay.address.port, MESSAGE)

    assert failed.value.code == expected_code
    assert expected_text in failed.value.message


async def test_upstream_refusing_every_recipient_gets_554_with_its_text(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    handler.rcpt_replies["rcpt@example.org"] = "550 5.1.1 No such user here"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await send(relay.address.port, MESSAGE)

    assert failed.value.code == 554
    assert "5.1.1 No such user here" in failed.value.message


async def test_one_recipient_refused_for_good_the_others_still_get_it(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user here"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    reply = await send(
        relay.address.port, MESSAGE, rcpts=["a@example.org", "gone@example.org", "b@example.org"]
    )

    assert "queued as" in reply
    await handler.wait(1)
    assert handler.arrivals[0].rcpt_tos == ["a@example.org", "b@example.org"]


async def test_one_recipient_deferred_makes_the_client_retry(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    handler.rcpt_replies["busy@example.org"] = "450 4.2.1 Mailbox busy"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await send(relay.address.port, MESSAGE, rcpts=["a@example.org", "busy@example.org"])

    assert deferred.value.code == 451


async def test_smtputf8_mail_is_forwarded_with_smtputf8(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    message = "From: jörg@bücher.example\r\nSubject: ü\r\n\r\nbody\r\n".encode()

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.sendmail(
            "jörg@bücher.example", ["anna@example.org"], message, mail_options=["SMTPUTF8"]
        )

    await handler.wait(1)
    assert handler.arrivals[0].mail_from == "jörg@bücher.example"
    assert "SMTPUTF8" in handler.arrivals[0].mail_options
    assert handler.arrivals[0].content.endswith(message)


async def test_smtputf8_mail_is_refused_when_the_upstream_cannot_take_it(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = await start_sink(smtputf8=False)
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail(
                "jörg@bücher.example",
                ["a@example.org"],
                b"Subject: x\r\n\r\nb\r\n",
                mail_options=["SMTPUTF8"],
            )

    assert refused.value.code == 554
    assert "SMTPUTF8" in refused.value.message
    assert handler.arrivals == []


async def test_smtp_url_upgrades_with_starttls_when_offered(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, server_tls: ssl.SSLContext
) -> None:
    handler, port = await start_sink(starttls=server_tls)
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE)

    await handler.wait(1)
    assert handler.arrivals[0].tls


async def test_required_starttls_verifies_the_certificate(
    start_sink: SinkStarter,
    start_relay: RelayStarter,
    tmp_path: Path,
    server_tls: ssl.SSLContext,
    ca_file: Path,
) -> None:
    handler, port = await start_sink(starttls=server_tls)
    trusted = await start_relay(
        make_config(
            f"smtp+starttls://127.0.0.1:{port}", tmp_path, upstream=f'ca_file = "{ca_file}"'
        )
    )
    untrusted = await start_relay(make_config(f"smtp+starttls://127.0.0.1:{port}", tmp_path))

    await send(trusted.address.port, MESSAGE)
    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await send(untrusted.address.port, MESSAGE)

    assert deferred.value.code == 451
    assert "certificate" in deferred.value.message.lower()
    await handler.wait(1)
    assert len(handler.arrivals) == 1
    assert handler.arrivals[0].tls


async def test_required_starttls_without_offer_defers(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp+starttls://127.0.0.1:{port}", tmp_path))

    with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
        await send(relay.address.port, MESSAGE)

    assert deferred.value.code == 451
    assert handler.arrivals == []


async def test_smtps_delivers_over_implicit_tls(
    start_sink: SinkStarter,
    start_relay: RelayStarter,
    tmp_path: Path,
    server_tls: ssl.SSLContext,
    ca_file: Path,
) -> None:
    handler, port = await start_sink(implicit_tls=server_tls)
    relay = await start_relay(
        make_config(f"smtps://127.0.0.1:{port}", tmp_path, upstream=f'ca_file = "{ca_file}"')
    )

    await send(relay.address.port, MESSAGE)

    await handler.wait(1)
    assert handler.arrivals[0].content.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1])


async def test_maildir_upstream_writes_one_file_per_recipient(
    start_relay: RelayStarter, tmp_path: Path
) -> None:
    maildir = tmp_path / "outbox"
    relay = await start_relay(make_config(f"maildir:{maildir}", tmp_path))

    await send(relay.address.port, MESSAGE, rcpts=["a@example.org", "b@example.org"])

    files = sorted((maildir / "new").iterdir())
    assert len(files) == 2
    assert list((maildir / "tmp").iterdir()) == []
    contents = [f.read_bytes() for f in files]
    assert {c.split(b"\r\n", 2)[1] for c in contents} == {
        b"Delivered-To: a@example.org",
        b"Delivered-To: b@example.org",
    }
    for content in contents:
        assert content.startswith(b"Return-Path: <sender@example.com>\r\n")
        assert content.endswith(
            b"Hello,\r\nX-Config-Set: this line is body text and stays\r\n"
            b"..a line that began with a dot\r\n"
        )
        assert b"\r\nX-Config-Set: marketing" not in content


async def test_stop_refuses_new_connections_and_lets_a_message_in_flight_finish(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    handler.hold = threading.Event()
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    relay_port = relay.address.port

    sending = asyncio.create_task(send(relay_port, MESSAGE))
    await handler.wait(1, attempts=True)
    stopping = asyncio.create_task(relay.stop(grace=10))
    await asyncio.sleep(0)  # one turn of the loop: stop() closes the listener
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(relay_port, MESSAGE)
    handler.hold.set()

    assert "queued as" in await sending
    await stopping
    assert len(handler.arrivals) == 1
