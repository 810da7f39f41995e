"""A bounded fuzz run against a live `pixelpost relay`: random command sequences and
random MIME bodies (hypothesis). The relay never crashes, answers every command with a
well-formed reply within its timeout, and forwards every message it accepted."""

from __future__ import annotations

import re
import socket
import sqlite3
from pathlib import Path

import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelpost.app.runtime import spool_counts
from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, smtp_command, smtp_reply, start, until
from tests.net import BALANCER, UNVERIFIED_TLS
from tests.sink import ThreadedSink

READ_TIMEOUT = 10.0
"""Far more than any answer takes; the relay's own timeout is 5 s here."""

addresses = st.sampled_from(
    ["a@example.org", "<b@example.org>", "", "<>", "x" * 300, "é@exämple.org", "a@[127.0.0.1]"]
)
header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
bodies = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        lambda subject, html, text: (
            f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
            f"--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
            f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n"
        ).encode("utf-8", "surrogateescape"),
        header_text,
        st.lists(
            st.sampled_from(
                ['<a href="https://example.com/x">x</a>', "<p>", "</body>", "<!--", "-->",
                 '<a ses:no-track href="http://e.x">', "<area href=https://a>", "&amp;",
                 "\r\n.\r\n", "\n.\n", "\x00"]
            ),
            max_size=30,
        ).map("".join),
        header_text,
    ),
)  # fmt: skip
commands = st.one_of(
    # A whole transaction from valid addresses, so that the run has mail to lose.
    st.builds(lambda b: ("SEND", b), bodies),
    st.sampled_from(["NOOP", "RSET", "HELP", "VRFY a", "EXPN a", "STARTTLS", "AUTH PLAIN"]),
    st.builds(lambda a: f"EHLO {a}", st.sampled_from(["client.test", "", "x" * 600])),
    st.builds(lambda a: f"HELO {a}", st.sampled_from(["client.test", ""])),
    st.builds(lambda a: f"MAIL FROM:{a}", addresses),
    st.builds(lambda a: f"RCPT TO:{a}", addresses),
    st.builds(lambda b: ("DATA", b), bodies),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
)


def test_random_sessions_never_crash_hang_or_lose_mail(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        config_text(
            f"smtp://127.0.0.1:{sink.port}",
            tmp_path,
            relay='timeout = "5s"\nmax_message_bytes = 100000\nmax_recipients = 5',
        )
    )
    running = start([str(BIN / "pixelpost"), "relay", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    queued: list[str] = []

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(commands, max_size=12))
    def session(script: list[str | bytes | tuple[str, bytes]]) -> None:
        with socket.create_connection(("127.0.0.1", running.smtp_port), READ_TIMEOUT) as conn:
            buffer = bytearray()
            assert smtp_reply(conn, buffer).startswith(b"220")
            for command in script:
                if isinstance(command, tuple):
                    if command[0] == "SEND":
                        conn.sendall(b"RSET\r\nMAIL FROM:<a@example.org>\r\n")
                        conn.sendall(b"RCPT TO:<b@example.org>\r\n")
                        answers = [smtp_reply(conn, buffer) for _ in range(3)]
                        if answers[0].startswith(b"421"):
                            return
                    conn.sendall(b"DATA\r\n")
                    if not smtp_reply(conn, buffer).startswith(b"354"):
                        continue
                    # Dot-stuffed, as a client must; then the end-of-data line.
                    body = (b"\r\n" + command[1]).replace(b"\r\n.", b"\r\n..")[2:]
                    body += b"" if body.endswith(b"\r\n") else b"\r\n"
                    conn.sendall(body + b".\r\n")
                    answer = smtp_reply(conn, buffer)
                    if answer.startswith(b"250"):
                        queued.append(answer.split()[-1].decode())
                    continue
                line = command if isinstance(command, bytes) else command.encode()
                conn.sendall(line + b"\r\n")
                answer = smtp_reply(conn, buffer)
                if line.upper().startswith(b"STARTTLS") and answer.startswith(b"220"):
                    return  # a TLS handshake would follow; not this test's subject
                if answer.startswith(b"421") or line.upper() == b"QUIT":
                    return
            conn.sendall(b"QUIT\r\n")

    session()
    assert running.process.poll() is None, running.stderr

    def settled() -> set[str]:
        """Messages delivered (their id in the upstream's Received header) or bounced
        (a Bounce event in the store): RFC 5321's two ends for accepted mail."""
        ids = {
            found.decode()
            for arrival in list(sink.handler.arrivals)
            for found in re.findall(rb"with E?SMTP id ([0-9a-f]{32})", arrival.content[:2000])
        }
        with sqlite3.connect(tmp_path / "pixelpost.db") as db:
            bounced = db.execute("SELECT message_id FROM events WHERE type = 'bounce'")
            ids.update(row[0] for row in bounced)
        return ids

    assert queued, "the run accepted no message at all"
    until(lambda: set(queued) <= settled(), "every accepted message delivered or bounced", 30)
    assert "Traceback" not in running.stderr
    assert running.stop() == 0


OUTSIDERS = ("203.0.113.5", "198.51.100.7")

proxied_commands = st.one_of(
    # A transaction to many recipients at once.
    st.builds(lambda b, n: ("SEND", b, n), bodies, st.integers(1, 60)),
    st.just("STARTTLS"),
    commands,
)


def test_random_sessions_behind_a_balancer_with_tls_never_relay_for_outsiders(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    """PROXY headers naming insiders and outsiders, STARTTLS at random points (with a
    real handshake), transactions to up to 60 recipients: outsiders never get a
    recipient accepted, every accepted message is delivered to every recipient, and
    with room for four connections no slot is ever lost."""
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    config = tmp_path / "pixelpost.toml"
    relay = f"""timeout = "5s"
max_message_bytes = 100000
max_recipients = 100
max_connections = 4
max_connections_per_ip = 2
allow_networks = ["{BALANCER}/32"]
proxy_protocol = true

[relay.tls]
cert = "{tmp_path / "relay.crt"}"
key = "{tmp_path / "relay.key"}"
"""
    config.write_text(config_text(f"smtp://127.0.0.1:{sink.port}", tmp_path, relay=relay))
    running = start([str(BIN / "pixelpost"), "relay", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    queued: dict[str, int] = {}

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.sampled_from((BALANCER, *OUTSIDERS)), st.lists(proxied_commands, max_size=8))
    def session(source: str, script: list[object]) -> None:
        raw = socket.create_connection(
            ("127.0.0.1", running.smtp_port), READ_TIMEOUT, source_address=(BALANCER, 0)
        )
        conn: socket.socket = raw
        try:
            raw.sendall(f"PROXY TCP4 {source} 127.0.0.1 40000 25\r\n".encode())
            buffer = bytearray()
            assert smtp_reply(conn, buffer).startswith(b"220")
            for command in script:
                if isinstance(command, tuple) and len(command) == 3:
                    _, body, count = command
                    conn.sendall(b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n")
                    answers = [smtp_reply(conn, buffer) for _ in range(2)]
                    if answers[0].startswith(b"421"):
                        return
                    rcpts = [f"<r{n}@example.org>".encode() for n in range(count)]
                    accepted = 0
                    for rcpt in rcpts:
                        answer = smtp_command(conn, buffer, b"RCPT TO:" + rcpt)
                        if answer.startswith(b"250"):
                            accepted += 1
                            assert source == BALANCER, (source, answer)  # never relay
                    if not smtp_command(conn, buffer, b"DATA").startswith(b"354"):
                        continue
                    stuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:]
                    stuffed += b"" if stuffed.endswith(b"\r\n") else b"\r\n"
                    conn.sendall(stuffed + b".\r\n")
                    answer = smtp_reply(conn, buffer)
                    if answer.startswith(b"250"):
                        queued[answer.split()[-1].decode()] = accepted
                    continue
                if isinstance(command, tuple):
                    continue  # a bare DATA: covered by the test above
                assert isinstance(command, str | bytes)
                line = command if isinstance(command, bytes) else command.encode()
                answer = smtp_command(conn, buffer, line)
                if line.upper() == b"STARTTLS" and answer.startswith(b"220"):
                    assert conn is raw, "STARTTLS accepted inside TLS"
                    conn = UNVERIFIED_TLS.wrap_socket(raw, server_hostname="127.0.0.1")
                    buffer = bytearray()
                    continue
                if answer.startswith(b"421") or line.upper() == b"QUIT":
                    return
            conn.sendall(b"QUIT\r\n")
        finally:
            conn.close()

    session()
    assert running.process.poll() is None, running.stderr
    assert queued, "the run accepted no message at all"

    def arrived() -> int:
        return sum(len(a.rcpt_tos) for a in list(sink.handler.arrivals))

    expected = sum(queued.values())
    # Once the spool is empty no copy is still on its way: none arrived twice.
    until(lambda: spool_counts(tmp_path / "spool") == (0, 0), "the spool emptied", 60)
    assert arrived() == expected
    # No connection slot was lost along the way: a new session is still welcome.
    with socket.create_connection(
        ("127.0.0.1", running.smtp_port), READ_TIMEOUT, source_address=(BALANCER, 0)
    ) as conn:
        conn.sendall(f"PROXY TCP4 {OUTSIDERS[0]} 127.0.0.1 40000 25\r\n".encode())
        assert smtp_reply(conn, bytearray()).startswith(b"220")
    assert "Traceback" not in running.stderr
    assert running.stop() == 0
