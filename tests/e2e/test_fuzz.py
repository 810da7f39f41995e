"""A bounded fuzz run against a live `pixelpost relay`: random command sequences and
random MIME bodies (hypothesis). The relay never crashes, answers every command with a
well-formed reply within its timeout, and forwards every message it accepted."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, start
from tests.sink import ThreadedSink

REPLY = re.compile(rb"^[2-5][0-9][0-9][ -]")
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
    st.sampled_from(["NOOP", "RSET", "HELP", "VRFY a", "EXPN a", "STARTTLS", "AUTH PLAIN"]),
    st.builds(lambda a: f"EHLO {a}", st.sampled_from(["client.test", "", "x" * 600])),
    st.builds(lambda a: f"HELO {a}", st.sampled_from(["client.test", ""])),
    st.builds(lambda a: f"MAIL FROM:{a}", addresses),
    st.builds(lambda a: f"RCPT TO:{a}", addresses),
    st.builds(lambda b: ("DATA", b), bodies),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
)


def reply(stream: socket.socket, buffer: bytearray) -> bytes:
    """One whole reply (its last line), within READ_TIMEOUT."""
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        end = buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            assert REPLY.match(line), line
            if line[3:4] == b" ":
                return line
            continue
        stream.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = stream.recv(65536)
        assert chunk, "closed without a reply"
        buffer += chunk


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
            assert reply(conn, buffer).startswith(b"220")
            for command in script:
                if isinstance(command, tuple):
                    conn.sendall(b"DATA\r\n")
                    if not reply(conn, buffer).startswith(b"354"):
                        continue
                    # Dot-stuffed, as a client must; then the end-of-data line.
                    body = (b"\r\n" + command[1]).replace(b"\r\n.", b"\r\n..")[2:]
                    body += b"" if body.endswith(b"\r\n") else b"\r\n"
                    conn.sendall(body + b".\r\n")
                    answer = reply(conn, buffer)
                    if answer.startswith(b"250"):
                        queued.append(answer.split()[-1].decode())
                    continue
                line = command if isinstance(command, bytes) else command.encode()
                conn.sendall(line + b"\r\n")
                answer = reply(conn, buffer)
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

    deadline = time.monotonic() + 30
    while not set(queued) <= settled() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued, "the run accepted no message at all"
    assert set(queued) <= settled()
    assert "Traceback" not in running.stderr
    assert running.stop() == 0
