"""The relay's SMTP side as the internet's mailers meet it: STARTTLS and implicit TLS
(trustme certificates), AUTH PLAIN and LOGIN only over TLS, throttled failures,
per-user sender domains, certificate reload, and the open-relay matrix."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import struct
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from pixelpost.core.passwords import hash_password
from pixelpost.store import SQLiteStore
from tests.conftest import RelayStarter, RunningRelay, events_of, make_config, published, until
from tests.integration.test_relay_passthrough import MESSAGE, smtp_dialogue
from tests.sink import SinkHandler

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD, log2_n=4)  # cheap for tests; the default is 2**15


def tls_lines(
    ca: trustme.CA, tmp_path: Path, *, networks: str = "10.0.0.0/8", extra: str = ""
) -> str:
    """[relay] lines: loopback outside allow_networks (unless `networks`), `extra`
    lines, a certificate for 127.0.0.1, implicit TLS on a free port, and two users."""
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "relay.crt", tmp_path / "relay.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return f"""allow_networks = ["{networks}"]
{extra}

[relay.tls]
cert = "{cert}"
key = "{key}"
listen_tls = "127.0.0.1:0"

[[relay.users]]
name = "app"
password_hash = "{HASH}"
from_domains = ["example.com"]

[[relay.users]]
name = "any"
password_hash = "{HASH}"
"""


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def smtps(relay: RunningRelay, ca: trustme.CA) -> aiosmtplib.SMTP:
    """A client of the relay's implicit-TLS port."""
    assert relay.server.tls_address is not None
    return aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=relay.server.tls_address.port,
        use_tls=True,
        tls_context=client_context(ca),
    )


@pytest.fixture
def no_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("relay.frontdoor.auth.FAILURE_DELAY", 0.0)


async def tls_relay(
    start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path, port: int, **kw: str
) -> RunningRelay:
    return await start_relay(
        make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay=tls_lines(ca, tmp_path, **kw))
    )


async def ehlo_lines(client: aiosmtplib.SMTP) -> list[str]:
    response = await client.ehlo()
    return response.message.splitlines()


async def test_starttls_then_auth_and_the_user_is_the_caller_identity(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    handler, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=relay.address.port,
        start_tls=False,
        tls_context=client_context(ca),
    )
    async with client:
        before = await ehlo_lines(client)
        assert "STARTTLS" in before
        assert not any(line.startswith("AUTH") for line in before)  # never in the clear
        with pytest.raises(aiosmtplib.SMTPException):
            await client.login("app", PASSWORD)
        await client.starttls()
        assert "AUTH LOGIN PLAIN" in await ehlo_lines(client)
        await client.login("app", PASSWORD)
        await client.sendmail("news@example.com", ["rcpt@example.org"], MESSAGE)

    await handler.wait(1)
    await events_of(store, send=1)
    [send] = [e for e in await published(store) if e["eventType"] == "Send"]
    assert send["mail"]["tags"]["ses:caller-identity"] == ["app"]
    # A login leaves no warning behind (aiosmtpd's own about its deprecated login_data).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_implicit_tls_offers_auth_at_once_and_login_works(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port)
    async with smtps(relay, ca) as client:
        lines = await ehlo_lines(client)
        assert "AUTH LOGIN PLAIN" in lines
        assert "STARTTLS" not in lines
        await client.auth_login("any", PASSWORD)
        await client.sendmail("anyone@elsewhere.example", ["rcpt@example.org"], MESSAGE)
    await handler.wait(1)


async def test_failures_are_throttled_per_client(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    no_delay: None,
) -> None:
    _, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port)
    codes = []
    for _ in range(7):
        async with smtps(relay, ca) as client:
            await client.ehlo()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
                await client.auth_plain("app", "wrong")  # one attempt (login() tries two)
            codes.append(refused.value.code)
    assert codes == [535] * 5 + [454] * 2
    # The right password is refused too, unchecked, until the failures age out.
    async with smtps(relay, ca) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.auth_plain("app", PASSWORD)
        assert refused.value.code == 454


async def test_parallel_wrong_passwords_get_no_more_checks_than_serial_ones(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    no_delay: None,
) -> None:
    _, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port, extra="max_connections_per_ip = 100")

    async def attempt() -> int:
        async with smtps(relay, ca) as client:
            await client.ehlo()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
                await client.auth_plain("app", "wrong")
            return refused.value.code

    codes = await asyncio.gather(*(attempt() for _ in range(60)))
    assert sorted(codes) == [454] * 55 + [535] * 5


async def test_a_user_may_send_only_from_their_domains(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port)
    async with smtps(relay, ca) as client:
        await client.login("app", PASSWORD)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("ceo@evil.example", ["rcpt@example.org"], MESSAGE)
        assert refused.value.code == 553
        await client.sendmail("News@Example.COM", ["rcpt@example.org"], MESSAGE)
    await handler.wait(1)
    assert handler.arrivals[0].mail_from == "News@Example.COM"


async def test_sighup_reload_serves_the_new_certificate_and_keeps_open_connections(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port, networks="127.0.0.0/8")
    assert relay.server.tls_address is not None
    tls_port = relay.server.tls_address.port

    async def serial() -> int:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=client_context(ca), server_hostname="127.0.0.1"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return hash(der)

    old = await serial()
    open_client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=tls_port, use_tls=True, tls_context=client_context(ca)
    )
    await open_client.connect()
    renewed = ca.issue_cert("127.0.0.1", "localhost")
    renewed.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    renewed.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    relay.server.reload_tls()

    assert await serial() != old
    await open_client.sendmail("news@example.com", ["rcpt@example.org"], MESSAGE)
    await open_client.quit()
    await handler.wait(1)

    (tmp_path / "relay.key").write_text("not a key")
    with pytest.raises(Exception, match="cannot load the relay's certificate"):
        relay.server.reload_tls()
    assert await serial() != old  # the certificate in use stays


@pytest.mark.parametrize("allowed_network", [True, False], ids=["allowed network", "outside"])
async def test_never_an_open_relay(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_delay: None,
    allowed_network: bool,
) -> None:
    """Every combination of network x TLS x AUTH x sender: mail goes through only from
    allow_networks or after AUTH (which needs TLS), and an authenticated user only from
    their domains."""
    monkeypatch.setattr("relay.frontdoor.auth.FAILURES_ALLOWED", 1000)
    handler, port = sink
    networks = "127.0.0.0/8" if allowed_network else "10.0.0.0/8"
    relay = await tls_relay(start_relay, ca, tmp_path, port, networks=networks)
    assert relay.server.tls_address is not None
    outcomes = {}
    for tls in ("plain", "starttls", "implicit"):
        for auth in ("none", "good", "bad"):
            for sender in ("news@example.com", "ceo@evil.example"):
                implicit = tls == "implicit"
                client = aiosmtplib.SMTP(
                    hostname="127.0.0.1",
                    port=relay.server.tls_address.port if implicit else relay.address.port,
                    use_tls=implicit,
                    start_tls=tls == "starttls",
                    tls_context=client_context(ca),
                )
                before = len(handler.arrivals)
                async with client:
                    authenticated = False
                    if auth != "none":
                        try:
                            await client.login("app", PASSWORD if auth == "good" else "wrong")
                            authenticated = True
                        except aiosmtplib.SMTPException:
                            pass
                    try:
                        await client.sendmail(sender, ["rcpt@example.org"], MESSAGE)
                        accepted = True
                    except aiosmtplib.SMTPException:
                        accepted = False
                if accepted:
                    await handler.wait(before + 1)
                outcomes[(tls, auth, sender)] = (authenticated, accepted)

    for (tls, auth, sender), (authenticated, accepted) in outcomes.items():
        assert authenticated == (auth == "good" and tls != "plain"), (tls, auth, sender)
        # Authenticated: only the user's domains; otherwise: only from allow_networks.
        expected = sender.endswith("@example.com") if authenticated else allowed_network
        assert accepted == expected, (tls, auth, sender)
    assert len(handler.arrivals) == sum(accepted for _, accepted in outcomes.values())


async def greeting(port: int, source: str = "127.0.0.1") -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return await asyncio.wait_for(reader.readline(), 5), writer


async def test_connections_past_the_limits_are_told_421(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    _, port = sink
    relay = await start_relay(
        make_config(
            f"smtp://127.0.0.1:{port}",
            tmp_path,
            relay="max_connections = 3\nmax_connections_per_ip = 2",
        )
    )
    first, a = await greeting(relay.address.port)
    second, b = await greeting(relay.address.port)
    third, c = await greeting(relay.address.port)
    assert first.startswith(b"220")
    assert second.startswith(b"220")
    assert third.startswith(b"421 4.7.0 Too many connections from your address")
    other, d = await greeting(relay.address.port, "127.0.0.2")
    assert other.startswith(b"220")  # another address: the third connection in all
    fourth, e = await greeting(relay.address.port, "127.0.0.3")
    assert fourth.startswith(b"421 4.7.0 Too many connections;")
    b.close()
    await b.wait_closed()
    await until(lambda: relay.server.connections == 2, "the closed connection counted out")
    again, f = await greeting(relay.address.port)
    assert again.startswith(b"220")  # a place was freed
    for writer in (a, c, d, e, f):
        writer.close()


async def test_too_many_recipients_get_452_and_a_silent_client_421(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(
        make_config(
            f"smtp://127.0.0.1:{port}", tmp_path, relay='max_recipients = 2\ntimeout = "1s"'
        )
    )
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        refused = await client.sendmail(
            "sender@example.com", ["a@example.org", "b@example.org", "c@example.org"], MESSAGE
        )
    assert refused[0]["c@example.org"].code == 452
    await handler.wait(1)
    assert sorted(r for a in handler.arrivals for r in a.rcpt_tos) == [
        "a@example.org",
        "b@example.org",
    ]

    reader, writer = await asyncio.open_connection("127.0.0.1", relay.address.port)
    assert (await reader.readline()).startswith(b"220")
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.readline(), 5) == b"421 4.4.2 Error: timeout exceeded\r\n"
    assert await reader.read() == b""
    assert asyncio.get_running_loop().time() - started < 3
    writer.close()


async def test_commands_pipelined_behind_starttls_are_discarded(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    """CVE-2024-34083: plaintext sent after STARTTLS must not count as sent over TLS."""
    _, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port, networks="127.0.0.0/8")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.address.port)

    async def reply() -> bytes:
        while (line := await asyncio.wait_for(reader.readline(), 5))[3:4] == b"-":
            pass
        return line

    assert (await reply()).startswith(b"220")
    writer.write(b"EHLO client.test\r\n")
    assert (await reply()).startswith(b"250")
    writer.write(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
    assert (await reply()).startswith(b"220")
    await writer.start_tls(client_context(ca), server_hostname="127.0.0.1")
    writer.write(b"EHLO client.test\r\nRCPT TO:<rcpt@example.org>\r\n")
    assert (await reply()).startswith(b"250")
    assert (await reply()).startswith(b"503")  # no MAIL FROM: the injected one was dropped
    writer.close()


SMUGGLED_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
]
"""End-of-data look-alikes from SEC Consult's research and smtpsmug."""


def smuggling_attempt(end: bytes) -> bytes:
    return (
        b"EHLO client.test\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.org>\r\n"
        b"DATA\r\nSubject: one\r\n\r\nfirst" + end + b"MAIL FROM:<evil@example.com>\r\n"
        b"RCPT TO:<victim@example.org>\r\nDATA\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n"
    )


async def test_smuggled_ends_of_data_yield_one_normalized_message_each(
    start_relay: RelayStarter, tmp_path: Path
) -> None:
    """A maildir upstream shows the message as the relay made it (an SMTP client on the
    way out would normalise line ends again)."""
    maildir = tmp_path / "outbox"
    relay = await start_relay(make_config(f"maildir:{maildir}", tmp_path))

    async def arrived(count: int) -> list[bytes]:
        for _ in range(200):
            files = sorted((maildir / "new").glob("*")) if (maildir / "new").is_dir() else []
            if len(files) >= count:
                return [f.read_bytes() for f in files]
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} messages")

    for number, end in enumerate(SMUGGLED_ENDS, 1):
        replies = await smtp_dialogue(relay.address.port, smuggling_attempt(end), 6)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354", b"250", b"221"], end
        messages = await arrived(number)
        assert len(messages) == number, end
    await until(relay.idle, "the relay done with what it accepted")  # so nothing more comes
    messages = await arrived(len(SMUGGLED_ENDS))
    assert len(messages) == len(SMUGGLED_ENDS)
    for content in messages:
        assert b"\x00" not in content  # an upstream that drops NULs sees no end there
        assert b"Delivered-To: rcpt@example.org\r\n" in content
        assert content.endswith(b"DATA\r\n\r\nsmuggled\r\n")
        assert content.count(b"\n") == content.count(b"\r\n")
        assert content.count(b"\r") == content.count(b"\r\n")


async def test_bare_newlines_refused_when_configured(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(
        make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay='bare_newlines = "reject"')
    )
    replies = await smtp_dialogue(relay.address.port, smuggling_attempt(b"\n.\n"), 6)
    assert replies[4].startswith(b"550 5.5.2 Bare <LF> or <CR>")
    replies = await smtp_dialogue(relay.address.port, smuggling_attempt(b"\r\n\x00.\r\n"), 6)
    assert replies[4].startswith(b"550 5.6.0 NUL character")
    await until(relay.idle, "the relay done with what it accepted")  # so nothing more comes
    assert handler.arrivals == []


def proxy_v2(source: str, port: int) -> bytes:
    """A PROXY protocol v2 header for a TCP4 client."""
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("127.0.0.1").packed
    body = addresses + struct.pack("!HH", port, 2525)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


async def test_behind_a_load_balancer_the_proxy_header_names_the_client(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    lines = 'allow_networks = ["192.0.2.0/24"]\nproxy_protocol = true'
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay=lines))
    envelope = (
        b"EHLO client.test\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.org>\r\n"
    )
    message = b"DATA\r\nSubject: proxied\r\n\r\nhello\r\n.\r\nQUIT\r\n"

    # v1 from an allowed network: relayed, and the events say who sent it.
    header = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 2525\r\n"
    replies = await smtp_dialogue(
        relay.address.port, header + envelope + message, 6, greeting_counts=True
    )
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250"]
    await handler.wait(1)
    await events_of(store, send=1)
    [send] = [e for e in await published(store) if e["eventType"] == "Send"]
    assert send["mail"]["tags"]["ses:source-ip"] == ["192.0.2.7"]

    # v2 from elsewhere: refused at RCPT like any outsider, though the TCP peer is local.
    replies = await smtp_dialogue(
        relay.address.port, proxy_v2("198.51.100.9", 40001) + envelope, 4, greeting_counts=True
    )
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"554"]

    # No header: closed without a greeting.
    assert await smtp_dialogue(relay.address.port, envelope, 1, greeting_counts=True) == []


async def test_malformed_envelope_addresses_are_refused_at_mail_and_rcpt(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    """Refused where they are given, never accepted and bounced later; what the
    upstream is sent is what the events say; a recipient given twice gets one copy."""
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    wire = (
        b"EHLO client.test\r\n"
        b"MAIL FROM:<a\x00b@example.com>\r\n"
        b"MAIL FROM:<sender@example.com>\r\n"
        b"RCPT TO:<>\r\n"
        b"RCPT TO:<a\x00b@example.org>\r\n"
        b"RCPT TO:<a\rb@example.org>\r\n"
        b"RCPT TO:<x@bad..example>\r\n"
        b'RCPT TO:<"quoted"@example.org>\r\n'
        b"RCPT TO:<quoted@example.org>\r\n"
        b"DATA\r\nSubject: envelope\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    )
    replies = await smtp_dialogue(relay.address.port, wire, 12)
    assert [r[:9] for r in replies] == [
        b"250 HELP",
        b"501 5.1.7",
        b"250 2.1.0",
        b"501 5.1.3",
        b"501 5.1.3",
        b"501 5.1.3",
        b"553 5.1.3",  # aiosmtpd's own parser refuses this one
        b"250 2.1.5",
        b"250 2.1.5",
        b"354 End d",
        b"250 2.0.0",
        b"221 Bye",
    ]
    await until(relay.idle, "the relay done with what it accepted")  # so nothing more comes
    [arrival] = handler.arrivals
    assert arrival.rcpt_tos == ["quoted@example.org"]
    await events_of(store, delivery=1)
    [delivery] = [e for e in await published(store) if e["eventType"] == "Delivery"]
    assert delivery["delivery"]["recipients"] == ["quoted@example.org"]
    assert delivery["mail"]["destination"] == ["quoted@example.org"]


async def test_client_input_puts_one_line_in_the_log_never_a_traceback(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, port = sink
    relay = await tls_relay(start_relay, ca, tmp_path, port, networks="127.0.0.0/8")
    caplog.set_level(logging.DEBUG)
    replies = await smtp_dialogue(
        relay.address.port,
        b"EHLO client.test\r\nVRFY <\r\nMAIL FROM:<\r\nMAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<\r\nNOOP\r\n",
        6,
    )
    assert [r[:3] for r in replies] == [b"250", b"501", b"501", b"250", b"501", b"250"]

    # A TLS handshake that goes wrong, then one the client resets.
    for hello in (b"\x16\x03\x01\x00\x05hello", b""):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.address.port)
        writer.write(b"EHLO client.test\r\nSTARTTLS\r\n")
        while not (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220 Ready"):
            pass
        writer.write(hello)
        await writer.drain()
        writer.transport.abort()
    await until(lambda: relay.server.connections == 0, "every connection counted out")
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert problems == []
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)
