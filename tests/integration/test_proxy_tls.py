"""The relay behind a TCP load balancer that speaks the PROXY protocol, with TLS: the
client the header names stays the client after STARTTLS (allow_networks, the AUTH
throttle), a STARTTLS session is counted once, and on the implicit-TLS port the header
comes before the handshake. Raw sockets over loopback, trustme certificates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.conftest import RelayStarter, RunningRelay, make_config, until
from tests.integration.test_front_door import (
    PASSWORD,
    SMUGGLED_ENDS,
    client_context,
    tls_lines,
    tls_relay,
)
from tests.net import BALANCER
from tests.sink import SinkHandler


def proxy_v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 2525\r\n".encode()


async def behind_balancer(
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    port: int,
    *,
    limits: str = "",
) -> RunningRelay:
    """A relay that trusts the balancer's network, behind it, with TLS and users."""
    extra = f"proxy_protocol = true\n{limits}"
    return await tls_relay(start_relay, ca, tmp_path, port, networks=f"{BALANCER}/32", extra=extra)


async def no_connections_left(relay: RunningRelay) -> None:
    """The relay's count of connections returns to zero once the clients are gone."""
    await until(lambda: relay.server.connections == 0, "every connection counted out")


class Session:
    """One SMTP session on a raw stream: commands and whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> bytes:
        while (line := await asyncio.wait_for(self.reader.readline(), 10))[3:4] == b"-":
            pass
        return line

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def starttls_session(port: int, ca: trustme.CA, source: str) -> Session:
    """Through the balancer from `source`: PROXY header, greeting, EHLO, STARTTLS, EHLO."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(BALANCER, 0))
    session = Session(reader, writer)
    writer.write(proxy_v1(source))
    assert (await session.reply()).startswith(b"220")
    assert (await session.command(b"EHLO client.test")).startswith(b"250")
    assert (await session.command(b"STARTTLS")).startswith(b"220")
    await writer.start_tls(client_context(ca), server_hostname="127.0.0.1")
    assert (await session.command(b"EHLO client.test")).startswith(b"250")
    return session


async def test_after_starttls_the_proxied_client_is_still_the_client(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    """The open relay of issue 13: the balancer is in allow_networks, the client is
    not; after STARTTLS the relay must still see the client."""
    handler, port = sink
    relay = await behind_balancer(start_relay, ca, tmp_path, port)
    session = await starttls_session(relay.address.port, ca, "203.0.113.5")
    assert (await session.command(b"MAIL FROM:<a@example.com>")).startswith(b"250")
    assert (await session.command(b"RCPT TO:<victim@example.org>")).startswith(b"554 5.7.1")
    await session.close()

    # From the balancer's own network the same path relays: the rule itself works.
    session = await starttls_session(relay.address.port, ca, BALANCER)
    assert (await session.command(b"MAIL FROM:<a@example.com>")).startswith(b"250")
    assert (await session.command(b"RCPT TO:<rcpt@example.org>")).startswith(b"250")
    assert (await session.command(b"DATA")).startswith(b"354")
    assert (await session.command(b"Subject: ok\r\n\r\nhello\r\n.")).startswith(b"250")
    await session.close()
    await handler.wait(1)
    assert len(handler.arrivals) == 1


async def test_after_starttls_auth_failures_count_against_the_proxied_client(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("relay.frontdoor.auth.FAILURE_DELAY", 0.0)
    _, port = sink
    relay = await behind_balancer(start_relay, ca, tmp_path, port)
    wrong = b"AUTH PLAIN " + base64.b64encode(b"\0app\0wrong")
    right = b"AUTH PLAIN " + base64.b64encode(b"\0app\0" + PASSWORD.encode())
    codes = []
    for _ in range(6):
        session = await starttls_session(relay.address.port, ca, "198.51.100.7")
        codes.append((await session.command(wrong))[:3])
        await session.close()
    assert codes == [b"535"] * 5 + [b"454"]
    # Another client behind the same balancer is not locked out.
    session = await starttls_session(relay.address.port, ca, "198.51.100.8")
    assert (await session.command(right)).startswith(b"235")
    await session.close()


async def test_starttls_sessions_are_counted_once(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    """Every session released: with room for two connections per client, session after
    session from one client is still admitted, and the count returns to zero."""
    _, port = sink
    relay = await behind_balancer(
        start_relay, ca, tmp_path, port, limits="max_connections = 3\nmax_connections_per_ip = 2"
    )
    for _ in range(25):
        session = await starttls_session(relay.address.port, ca, "192.0.2.10")
        assert (await session.command(b"QUIT")).startswith(b"221")
        await session.close()
    await no_connections_left(relay)


async def test_starttls_without_a_balancer_is_counted_once(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    _, port = sink
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "relay.crt", tmp_path / "relay.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    lines = f'max_connections_per_ip = 2\n\n[relay.tls]\ncert = "{cert}"\nkey = "{key}"\n'
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay=lines))
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.address.port)
        session = Session(reader, writer)
        assert (await session.reply()).startswith(b"220")
        assert (await session.command(b"EHLO client.test")).startswith(b"250")
        assert (await session.command(b"STARTTLS")).startswith(b"220")
        await writer.start_tls(client_context(ca), server_hostname="127.0.0.1")
        assert (await session.command(b"QUIT")).startswith(b"221")
        await session.close()
    await no_connections_left(relay)


def implicit_tls_through_balancer(
    port: int, ca: trustme.CA, source: str, script: list[bytes]
) -> list[bytes]:
    """The PROXY header and the client's first TLS bytes in one segment, as a balancer
    may send them; then `script` over TLS. The replies, greeting first."""
    context = client_context(ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), 10, source_address=(BALANCER, 0)) as raw:
        header = proxy_v1(source)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(header + outgoing.read())
                header = b""
                data = raw.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        raw.sendall(outgoing.read())
        replies: list[bytes] = []
        buffer = b""

        def reply() -> bytes:
            nonlocal buffer
            while True:
                line, sep, rest = buffer.partition(b"\r\n")
                if sep:
                    buffer = rest
                    if line[3:4] != b"-":
                        return line
                    continue
                while True:
                    try:
                        buffer += tls.read(65536)
                        break
                    except ssl.SSLWantReadError:
                        data = raw.recv(65536)
                        assert data, "closed"
                        incoming.write(data)

        replies.append(reply())
        for line in script:
            tls.write(line + b"\r\n")
            raw.sendall(outgoing.read())
            replies.append(reply())
        return replies


async def test_implicit_tls_behind_a_balancer_reads_the_header_before_the_handshake(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await behind_balancer(start_relay, ca, tmp_path, port)
    assert relay.server.tls_address is not None
    tls_port = relay.server.tls_address.port
    auth = b"AUTH PLAIN " + base64.b64encode(b"\0app\0" + PASSWORD.encode())
    envelope = [b"EHLO client.test", b"MAIL FROM:<a@example.com>", b"RCPT TO:<r@example.org>"]

    outsider = await asyncio.to_thread(
        implicit_tls_through_balancer, tls_port, ca, "203.0.113.5", envelope
    )
    assert [r[:3] for r in outsider] == [b"220", b"250", b"250", b"554"]

    user = await asyncio.to_thread(
        implicit_tls_through_balancer,
        tls_port,
        ca,
        "203.0.113.5",
        [envelope[0], auth, *envelope[1:], b"DATA", b"Subject: tls\r\n\r\nhi\r\n."],
    )
    assert [r[:3] for r in user] == [b"220", b"250", b"235", b"250", b"250", b"354", b"250"]
    await handler.wait(1)
    assert b"Subject: tls" in handler.arrivals[0].content


async def test_smuggled_ends_through_a_balancer_after_starttls_to_many_recipients(
    start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    """The smuggling variants once more, from behind the balancer, over STARTTLS, to
    several recipients (a tracked copy each): every copy holds the smuggled text as
    text, and nothing else arrives."""
    maildir = tmp_path / "outbox"
    relay = await start_relay(
        make_config(
            f"maildir:{maildir}",
            tmp_path,
            relay=tls_lines(
                ca, tmp_path, networks=f"{BALANCER}/32", extra="proxy_protocol = true"
            ),
        )
    )
    recipients = [b"a@example.org", b"b@example.org", b"c@example.org"]
    for end in SMUGGLED_ENDS:
        session = await starttls_session(relay.address.port, ca, BALANCER)
        assert (await session.command(b"MAIL FROM:<sender@example.com>")).startswith(b"250")
        for rcpt in recipients:
            assert (await session.command(b"RCPT TO:<" + rcpt + b">")).startswith(b"250")
        assert (await session.command(b"DATA")).startswith(b"354")
        smuggled = (
            b'Content-Type: text/html\r\n\r\n<a href="https://example.com/x">x</a>first'
            + end
            + b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"\r\nsmuggled\r\n."
        )
        assert (await session.command(smuggled)).startswith(b"250")
        assert (await session.command(b"QUIT")).startswith(b"221")
        await session.close()
    expected = len(SMUGGLED_ENDS) * len(recipients)
    await until(relay.idle, "the relay done with what it accepted")  # so nothing more comes
    found = sorted((maildir / "new").glob("*"))
    assert len(found) == expected
    for path in found:
        content = path.read_bytes()
        assert b"victim@example.org" in content  # as text of the one message
        assert b"/c/" in content  # tracked, per copy
        assert b"\x00" not in content
        assert content.count(b"\n") == content.count(b"\r\n")
        assert content.count(b"\r") == content.count(b"\r\n")


async def test_a_proxied_client_past_its_limit_is_told_421_and_released(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, ca: trustme.CA, tmp_path: Path
) -> None:
    """The limit per client applies to the client the header names; a connection
    refused once it is named counts no more."""
    _, port = sink
    relay = await behind_balancer(
        start_relay, ca, tmp_path, port, limits="max_connections = 10\nmax_connections_per_ip = 2"
    )
    sessions = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", relay.address.port, local_addr=(BALANCER, 0)
        )
        writer.write(proxy_v1("198.51.100.30"))
        sessions.append(Session(reader, writer))
        assert (await sessions[-1].reply()).startswith(b"220")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", relay.address.port, local_addr=(BALANCER, 0)
    )
    writer.write(proxy_v1("198.51.100.30"))
    third = Session(reader, writer)
    assert (await third.reply()).startswith(b"421 4.7.0 Too many connections from your address")
    # Another client behind the same balancer is welcome.
    other_reader, other_writer = await asyncio.open_connection(
        "127.0.0.1", relay.address.port, local_addr=(BALANCER, 0)
    )
    other_writer.write(proxy_v1("198.51.100.31"))
    other = Session(other_reader, other_writer)
    assert (await other.reply()).startswith(b"220")
    for session in (*sessions, third, other):
        await session.close()
    await no_connections_left(relay)
