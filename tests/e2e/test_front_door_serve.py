"""Issue 13's attacks, repeated against `pixelpost serve` as a user runs it: behind a
PROXY-protocol balancer with STARTTLS it is no open relay and never runs out of
connection slots; one large message to many recipients neither grows its memory nor
holds up another client's session."""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import threading
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, delivered, smtp_command, smtp_reply, start
from tests.net import BALANCER, UNVERIFIED_TLS


def serve_behind_balancer(tmp_path: Path, limits: str) -> Running:
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    relay = f"""allow_networks = ["{BALANCER}/32"]
proxy_protocol = true
{limits}

[relay.tls]
cert = "{tmp_path / "relay.crt"}"
key = "{tmp_path / "relay.key"}"
"""
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"maildir:{tmp_path / 'outbox'}", tmp_path, relay=relay))
    return start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)


def through_starttls(port: int, client: str) -> tuple[ssl.SSLSocket, bytearray]:
    """A session from `client` through the balancer, up to EHLO after STARTTLS."""
    raw = socket.create_connection(("127.0.0.1", port), 10, source_address=(BALANCER, 0))
    buffer = bytearray()
    raw.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 25\r\n".encode())
    assert smtp_reply(raw, buffer).startswith(b"220")
    assert smtp_command(raw, buffer, b"EHLO client.test").startswith(b"250")
    assert smtp_command(raw, buffer, b"STARTTLS").startswith(b"220")
    tls = UNVERIFIED_TLS.wrap_socket(raw, server_hostname="127.0.0.1")
    buffer = bytearray()
    assert smtp_command(tls, buffer, b"EHLO client.test").startswith(b"250")
    return tls, buffer


@pytest.mark.slow
def test_behind_a_balancer_with_starttls_serve_is_no_open_relay_and_leaks_no_slot(
    tmp_path: Path, processes: list[Running]
) -> None:
    running = serve_behind_balancer(tmp_path, "max_connections = 5\nmax_connections_per_ip = 2")
    processes.append(running)
    port = running.smtp_port

    tls, buffer = through_starttls(port, "203.0.113.5")
    assert smtp_command(tls, buffer, b"MAIL FROM:<a@example.com>").startswith(b"250")
    assert smtp_command(tls, buffer, b"RCPT TO:<victim@example.org>").startswith(b"554 5.7.1")
    tls.close()

    # A thousand STARTTLS sessions in a row, with room for two at a time per client.
    for _ in range(1000):
        tls, buffer = through_starttls(port, "198.51.100.1")
        assert smtp_command(tls, buffer, b"QUIT").startswith(b"221")
        tls.close()

    # Every slot came back: the balancer's own network still relays.
    tls, buffer = through_starttls(port, BALANCER)
    for line in (b"MAIL FROM:<a@example.com>", b"RCPT TO:<rcpt@example.org>", b"DATA"):
        assert smtp_command(tls, buffer, line)[:1] in b"23"
    assert smtp_command(tls, buffer, b"Subject: still here\r\n\r\nhi\r\n.").startswith(b"250")
    tls.close()
    [message] = delivered(tmp_path / "outbox")
    assert b"Subject: still here" in message.read_bytes()
    assert running.stop() == 0
    assert "Traceback" not in running.stderr


def newsletter(size: int) -> bytes:
    """An 8bit HTML newsletter of about `size` bytes, a paragraph and a link per line."""
    paragraphs = []
    total = n = 0
    while total < size:
        paragraph = (
            f'<p style="margin:0 0 12px">Item {n}: news of the week. {"Lorem ipsum. " * 40}'
            f'<a href="https://shop.example.com/item/{n}?utm_source=news&amp;p=1">More</a></p>\n'
        )
        paragraphs.append(paragraph)
        total += len(paragraph)
        n += 1
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["Subject"] = "This week"
    message["X-Config-Set"] = "marketing"
    message.set_content("This week, in plain text.\n")
    html = "<html><body>" + "".join(paragraphs) + "</body></html>"
    message.add_alternative(html, subtype="html", cte="8bit")
    return message.as_bytes(policy=policy.SMTP)


def resident(pid: int) -> int:
    """Bytes resident in process `pid` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow
def test_a_large_message_to_many_recipients_bounds_memory_and_stalls_no_one(
    tmp_path: Path, processes: list[Running]
) -> None:
    """Before, such a message was rendered for every recipient on the event loop ahead
    of the 250: memory grew with the recipient count and other sessions waited seconds."""
    recipients = 120
    message = newsletter(1_500_000)
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        config_text(f"maildir:{tmp_path / 'outbox'}", tmp_path, relay="max_recipients = 1000")
    )
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    port = running.smtp_port
    pid = running.process.pid
    idle = resident(pid)

    peak = idle
    latencies: list[float] = []
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        with socket.create_connection(("127.0.0.1", port), 10) as probe:
            buffer = bytearray()
            smtp_reply(probe, buffer)
            while not done.is_set():
                peak = max(peak, resident(pid))
                started = time.perf_counter()
                assert smtp_command(probe, buffer, b"NOOP").startswith(b"250")
                latencies.append(time.perf_counter() - started)
                done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with socket.create_connection(("127.0.0.1", port), 30) as client:
            buffer = bytearray()
            smtp_reply(client, buffer)
            smtp_command(client, buffer, b"EHLO client.test")
            smtp_command(client, buffer, b"MAIL FROM:<news@example.com>")
            for n in range(recipients):
                assert smtp_command(client, buffer, f"RCPT TO:<r{n}@example.org>".encode())[
                    :3
                ] == (b"250")
            assert smtp_command(client, buffer, b"DATA").startswith(b"354")
            data = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
            started = time.perf_counter()
            client.sendall(data)
            assert smtp_reply(client, buffer).startswith(b"250")
            to_250 = time.perf_counter() - started
        delivered(tmp_path / "outbox", recipients, within=120)
    finally:
        done.set()
        watcher.join()

    assert len(os.listdir(tmp_path / "outbox" / "new")) == recipients
    grew = peak - idle
    # A copy at a time per delivery slot, not a copy per recipient (180 MB here).
    assert grew < 150 * 1024 * 1024, f"grew {grew / 2**20:.0f} MB"
    assert to_250 < 5, to_250
    slowest = max(latencies)
    assert slowest < 1.0, f"another session waited {slowest:.2f}s"
    assert statistics.quantiles(latencies, n=100)[98] < 0.25
    assert running.stop() == 0
    assert "Traceback" not in running.stderr
