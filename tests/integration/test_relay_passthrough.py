"""The relay between a real SMTP client (aiosmtplib) and a real upstream (aiosmtpd)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import threading
from pathlib import Path

import aiosmtplib
import pytest

from pixelpost.core.headers import parse_header_section
from pixelpost.store import SQLiteStore
from tests.conftest import (
    RelayStarter,
    SinkStarter,
    events_of,
    make_config,
    published,
    recorded,
    until,
)
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
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    message = header + b"X-SES-MESSAGE-TAGS: a=1, b=two\r\nSubject: hi\r\n\r\nbody\r\n"
    await send(relay.address.port, message)

    await handler.wait(1)
    await events_of(store, delivery=1)
    send_event, delivery = await published(store)
    assert (send_event["eventType"], delivery["eventType"]) == ("Send", "Delivery")
    tags = send_event["mail"]["tags"]
    assert (tags["a"], tags["b"], tags["ses:configuration-set"]) == (
        ["1"],
        ["two"],
        [expected_set],
    )
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
    relay = await start_relay(config)

    await send(
        relay.address.port, b"Content-Type: text/html\r\n\r\n<a href='https://e.x/'>x</a>\r\n"
    )

    await handler.wait(1)
    assert handler.arrivals[0].content.endswith(b"\r\n\r\n<a href='https://e.x/'>x</a>\r\n")
    events = await events_of(store, delivery=1)
    assert [kind for kind, _, _ in events] == ["send", "delivery"]
    assert await published(store) == []  # no configuration set: no destination


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


@pytest.mark.parametrize(
    ("header", "entry"),
    [
        ("X-Message-Tags", "campaign spring"),
        ("X-SES-MESSAGE-TAGS", "ses:from-domain=forged"),
        ("X-Message-Tags", "campaign="),
    ],
)
async def test_a_malformed_message_tag_is_refused_naming_the_header_and_the_rule(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    header: str,
    entry: str,
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    message = f"{header}: team=growth, {entry}\r\nSubject: x\r\n\r\nbody\r\n".encode()

    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(relay.address.port, message)

    assert refused.value.code == 554
    assert refused.value.message.startswith(f'5.6.0 {header}: "{entry}" is not a message tag')
    assert "name=value" in refused.value.message
    assert handler.data_attempts == 0
    assert list(relay.spool.ids()) == []  # nothing accepted


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


async def test_smtputf8_mail_bounces_when_the_upstream_cannot_take_it(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = await start_sink(smtputf8=False)
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.sendmail(
            "jörg@bücher.example",
            ["a@example.org"],
            b"Subject: x\r\n\r\nb\r\n",
            mail_options=["SMTPUTF8"],
        )

    events = await events_of(store, bounce=1)
    [bounce] = [detail for kind, _, detail in events if kind == "bounce"]
    assert bounce["bounceType"] == "Permanent"
    assert "SMTPUTF8" in bounce["bouncedRecipients"][0]["diagnosticCode"]
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
    store: SQLiteStore,
) -> None:
    handler, port = await start_sink(starttls=server_tls)
    untrusted = await start_relay(make_config(f"smtp+starttls://127.0.0.1:{port}", tmp_path))

    await send(untrusted.address.port, MESSAGE)

    events = await events_of(store, delivery_delay=1)
    [delay] = [detail for kind, _, detail in events if kind == "delivery_delay"]
    assert "certificate" in delay["delayedRecipients"][0]["diagnosticCode"].lower()
    assert handler.arrivals == []
    await untrusted.stop()

    trusted = await start_relay(
        make_config(
            f"smtp+starttls://127.0.0.1:{port}", tmp_path, upstream=f'ca_file = "{ca_file}"'
        )
    )
    assert trusted.queue.depth == 1  # the same spool: the deferred message waits there

    await handler.wait(1)
    assert handler.arrivals[0].tls
    await events_of(store, delivery=1)


async def test_required_starttls_without_offer_defers(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp+starttls://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE)

    events = await events_of(store, delivery_delay=1)
    [delay] = [detail for kind, _, detail in events if kind == "delivery_delay"]
    assert "STARTTLS" in delay["delayedRecipients"][0]["diagnosticCode"]
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
    start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    maildir = tmp_path / "outbox"
    relay = await start_relay(make_config(f"maildir:{maildir}", tmp_path))

    await send(relay.address.port, MESSAGE, rcpts=["a@example.org", "b@example.org"])

    await events_of(store, delivery=1)
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


async def refused(port: int) -> bool:
    """Whether a connection to `port` on 127.0.0.1 is refused, or reset by a listener
    closing with it in its backlog (one that is not is closed at once)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_stop_refuses_new_connections_and_lets_a_delivery_in_flight_finish(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.hold = threading.Event()
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    relay_port = relay.address.port

    assert "queued as" in await send(relay_port, MESSAGE)
    await handler.wait(1, attempts=True)
    stopping = asyncio.create_task(relay.stop())
    await until(lambda: refused(relay_port), "new connections refused")
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(relay_port, MESSAGE)
    assert not stopping.done()
    handler.hold.set()

    await stopping
    assert len(handler.arrivals) == 1
    assert relay.spool.ids() == []
    assert [kind for kind, _, _ in recorded(store)] == ["send", "delivery"]


async def smtp_dialogue(
    port: int, wire: bytes, replies: int, *, greeting_counts: bool = False
) -> list[bytes]:
    """Send `wire` in one write after the greeting (pipelined, as a client may), and
    return the first `replies` replies; with `greeting_counts`, `wire` goes first (a
    PROXY header does) and the greeting is the first reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not greeting_counts:
            await reader.readline()  # 220
        writer.write(wire)
        await writer.drain()
        lines = []
        while len(lines) < replies:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                break
            if line[3:4] != b"-":  # the last line of a reply
                lines.append(line.rstrip())
        return lines
    finally:
        writer.close()


async def test_data_on_the_wire_pipelined_smuggling_and_size(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    """Only CRLF.CRLF ends a message (no smuggled second one), a dot-stuffed line comes
    out unstuffed, commands pipelined after the end are answered, and a message over
    relay.max_message_bytes gets 552 once it is all read, with nothing forwarded."""
    handler, port = sink
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay="max_message_bytes = 2000")
    relay = await start_relay(config)
    envelope = b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.org>\r\nDATA\r\n"
    smuggled = (
        b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.com>\r\n"
        b"RCPT TO:<victim@example.org>\r\nDATA\r\n\r\nsmuggled\r\n"
        b"..dot\r\n.\r\n"
    )
    wire = b"EHLO client.test\r\n" + envelope + smuggled + envelope
    wire += b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n"
    wire += (b"y" * 78 + b"\r\n") * 30 + b".\r\nQUIT\r\n"

    replies = await smtp_dialogue(relay.address.port, wire, 10)

    codes = [reply[:3] for reply in replies]
    assert codes == [
        b"250",
        b"250",
        b"250",
        b"354",
        b"250",
        b"250",
        b"250",
        b"354",
        b"552",
        b"221",
    ]
    await until(relay.idle, "the relay done with what it accepted")  # so nothing more comes
    [arrival] = handler.arrivals
    assert arrival.rcpt_tos == ["rcpt@example.org"]
    assert arrival.content.endswith(b"\r\n\r\nsmuggled\r\n.dot\r\n")
    # The attempt is text of the one message (aiosmtplib sends bare LFs as CRLF and
    # dot-stuffs the line, so the upstream reads it as text too).
    assert b"first\r\n.\r\nMAIL FROM:<evil@example.com>\r\n" in arrival.content
    assert handler.rcpt_attempts == ["rcpt@example.org"]


async def test_large_messages_wait_for_a_place_small_ones_do_not(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory stays bounded: past relay.frontdoor.data.LARGE_MESSAGE bytes a message waits for one
    of LARGE_MESSAGES_AT_ONCE places (here 10 KB and one place)."""
    monkeypatch.setattr("relay.frontdoor.data.LARGE_MESSAGE", 10_000)
    monkeypatch.setattr("relay.frontdoor.server.LARGE_MESSAGES_AT_ONCE", 1)
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    envelope = (
        b"EHLO client.test\r\nMAIL FROM:<sender@example.com>\r\n"
        b"RCPT TO:<rcpt@example.org>\r\nDATA\r\n"
    )
    body = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 200  # 20 KB

    async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.address.port)
        await reader.readline()
        writer.write(envelope)
        while not (await reader.readline()).startswith(b"354"):
            pass
        return reader, writer

    first_reader, first = await opened()
    first.write(body)  # over the threshold, unfinished: it holds the one place
    await first.drain()
    second_reader, second = await opened()
    second.write(body + b".\r\n")
    await second.drain()
    second_reply = asyncio.ensure_future(second_reader.readline())

    small = await smtp_dialogue(relay.address.port, envelope + b"Subject: s\r\n\r\nhi\r\n.\r\n", 5)
    assert small[-1].startswith(b"250")
    # Nothing shows that the relay has read the second message and holds it back but
    # the reply not coming: without the limit, it comes some 10 ms after the small
    # one's (20 KB to spool), so 100 ms is a fair chance to come, yet a short wait.
    await asyncio.sleep(0.1)
    assert not second_reply.done()  # still waiting for the place

    first.write(b".\r\n")
    assert (await asyncio.wait_for(first_reader.readline(), 10)).startswith(b"250")
    assert (await asyncio.wait_for(second_reply, 10)).startswith(b"250")
    for writer in (first, second):
        writer.close()
    await handler.wait(3)


async def test_a_declared_size_over_the_limit_is_refused_at_mail_from_with_an_enhanced_code(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(
        make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay="max_message_bytes = 100000")
    )
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=relay.address.port, start_tls=False
    ) as client:
        await client.ehlo()
        assert client.esmtp_extensions["size"] == "100000"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail("sender@example.com", options=["SIZE=100001"])
        assert refused.value.code == 552
        assert refused.value.message.startswith("5.3.4 ")
        with pytest.raises(aiosmtplib.SMTPResponseException) as unknown:
            await client.mail("sender@example.com", options=["FOO=1"])
        assert (unknown.value.code, unknown.value.message[:6]) == (555, "5.5.4 ")
        await client.mail("sender@example.com", options=["SIZE=100000"])
    assert handler.data_attempts == 0
