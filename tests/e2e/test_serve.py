"""`pixelpost serve`, `relay` and `tracker` in a subprocess, driven as a user would."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import subprocess
import sys
import urllib.request
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, delivered, start, until
from tests.sink import ThreadedSink

MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: rcpt@example.org\r\n"
    b"X-Config-Set: marketing\r\n"
    b"X-Message-Tags: campaign=spring\r\n"
    b"Subject: e2e\r\n"
    b"\r\n"
    b"Hello from the end-to-end test.\r\n"
)


def write_config(tmp_path: Path, upstream_url: str) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(config_text(upstream_url, tmp_path))
    return path


def healthz(url: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]


def assert_clean_exit(running: Running, signum: int) -> None:
    assert running.stop(signum) == 0
    assert "Traceback" not in running.stderr
    assert running.stdout_rest == ["pixelpost stopped\n"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_relays_and_tracks_until_a_signal(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running], signum: int
) -> None:
    config = write_config(tmp_path, f"smtp://127.0.0.1:{sink.port}")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)

    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(
                "sender@example.com",
                ["rcpt@example.org"],
                MESSAGE.replace(b"X-Config-Set: marketing", b"X-Config-Set: nosuch"),
            )
    assert refused.value.smtp_code == 554
    assert b'"nosuch"' in refused.value.smtp_error

    sink.handler.wait_for(1)
    arrived = sink.handler.arrivals[0].content
    assert arrived.startswith(b"Received: from ")
    assert arrived.endswith(
        b"From: Sender <sender@example.com>\r\nTo: rcpt@example.org\r\nSubject: e2e\r\n"
        b"\r\nHello from the end-to-end test.\r\n"
    )
    assert healthz(running.http_url)["status"] == "ok"
    assert_clean_exit(running, signum)
    assert len(sink.handler.arrivals) == 1


def test_the_banner_shows_a_webhook_by_its_host_alone(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = write_config(tmp_path, f"smtp://127.0.0.1:{sink.port}")
    with config.open("a") as out:
        out.write(
            '[destinations.hook]\ntype = "webhook"\n'
            'url = "https://user:pw@hooks.example.com:8443/T0/secret-path"\n'
            'secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
        )
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    assert running.value("destination hook") == "https://hooks.example.com:8443/…"
    assert running.value("destination archive") == str(tmp_path / "events.jsonl")
    assert "secret-path" not in "".join(running.banner)
    assert "pw@" not in "".join(running.banner)
    assert_clean_exit(running, signal.SIGTERM)


def test_relay_and_tracker_run_as_separate_processes(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = write_config(tmp_path, f"smtp://127.0.0.1:{sink.port}")
    relay = start([sys.executable, "-m", "relay", "-c", str(config)], cwd=tmp_path)
    processes.append(relay)
    tracker = start([sys.executable, "-m", "tracker", "-c", str(config)], cwd=tmp_path)
    processes.append(tracker)

    assert not any(line.split()[0] == "http" for line in relay.banner[1:-1])
    assert not any(line.split()[0] == "smtp" for line in tracker.banner[1:-1])
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as client:
        client.sendmail("sender@example.com", ["rcpt@example.org"], MESSAGE)
    sink.handler.wait_for(1)
    health = healthz(tracker.http_url)
    from pixelpost import __version__  # noqa: PLC0415

    assert health == {"status": "ok", "version": __version__}
    assert_clean_exit(relay, signal.SIGTERM)
    assert_clean_exit(tracker, signal.SIGTERM)


def complaint_about(copy: bytes) -> bytes:
    """A feedback report (RFC 5965) that returns `copy` whole."""
    return (
        b"From: feedback@fbl.example.net\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: test-fbl/1.0\r\nVersion: 1\r\n"
        b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n" + copy + b"\r\n--b--\r\n"
    )


def test_serve_with_no_configuration_runs_on_the_builtin_defaults(
    tmp_path: Path, processes: list[Running]
) -> None:
    """The README's quick start: fixed ports 2525 and 8080, everything under ./var/."""
    running = start([str(BIN / "pixelpost"), "serve"], cwd=tmp_path)
    processes.append(running)

    assert running.value("smtp") == "127.0.0.1:2525"
    assert running.value("http") == "http://127.0.0.1:8080"
    assert running.value("store") == "var/pixelpost.db"
    assert running.value("upstream") == "maildir:var/outbox"
    assert (tmp_path / "var" / "signing.key").exists()
    with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as client:
        client.sendmail(
            "sender@example.com",
            ["rcpt@example.org"],
            MESSAGE.replace(b"X-Config-Set: marketing", b"X-Config-Set: default"),
        )
    [message] = delivered(tmp_path / "var" / "outbox")
    assert message.read_bytes().endswith(b"\r\nHello from the end-to-end test.\r\n")
    assert b"X-Config-Set" not in message.read_bytes()
    # The intake takes reports on loopback: one on the delivered copy is its Complaint.
    assert running.value("intake") == "127.0.0.1:2526"
    with smtplib.SMTP("127.0.0.1", 2526, timeout=10) as client:
        client.sendmail("", ["fbl@bounces.localhost"], complaint_about(message.read_bytes()))
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # never a relay
            client.sendmail("", ["someone@example.org"], b"Subject: hi\r\n\r\nhi\r\n")
    events = tmp_path / "var" / "events.jsonl"
    until(
        lambda: events.exists() and b'"eventType":"Complaint"' in events.read_bytes(),
        "the Complaint",
    )
    assert healthz("http://127.0.0.1:8080")["status"] == "ok"
    # The dashboard's token is made on the first start, kept, and works for the API.
    assert running.value("dashboard") == "http://127.0.0.1:8080/dashboard"
    assert any("var/api-token" in line for line in running.banner)
    token = (tmp_path / "var" / "api-token").read_text().strip()
    assert len(token) >= 32
    assert (tmp_path / "var" / "api-token").stat().st_mode & 0o777 == 0o600
    request = urllib.request.Request(
        "http://127.0.0.1:8080/api/v1/stats", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["totals"]["sent"] >= 0
    assert_clean_exit(running, signal.SIGINT)


def test_a_port_in_use_is_one_clear_line(tmp_path: Path, processes: list[Running]) -> None:
    config = write_config(tmp_path, "maildir:./outbox")
    first = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(first)
    taken = config.read_text().replace(
        'listen = "127.0.0.1:0"\nhostname', f'listen = "127.0.0.1:{first.smtp_port}"\nhostname'
    )
    config.write_text(taken)

    result = subprocess.run(
        [str(BIN / "pixelpost"), "serve", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )

    assert result.returncode == 1
    assert f"cannot listen for SMTP on 127.0.0.1:{first.smtp_port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert_clean_exit(first, signal.SIGTERM)


def test_check_config_on_the_example_in_an_empty_environment() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [str(BIN / "pixelpost"), "check-config", "-c", "config.example.toml"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_tracks_every_html_part(tmp_path: Path, processes: list[Running]) -> None:
    """Issue 3's acceptance: mail through `pixelpost serve` arrives with one pixel and
    tracked links in every HTML part, no ses:* attributes, text parts and attachments
    byte-identical, quoted-printable and base64 still valid, charsets unchanged."""
    config = write_config(tmp_path, f"maildir:{tmp_path / 'outbox'}")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "reader@example.org"
    message["X-Config-Set"] = "marketing"
    message.set_content("Plain text with https://example.com/not-tracked\n")
    message.add_alternative(
        '<p>Grüße</p><a ses:tags="slot:hero" href="https://example.com/a?x=1&amp;y=2">A</a>'
        '<a ses:no-track href="https://example.com/no">N</a></body>',
        subtype="html",
        cte="quoted-printable",
    )
    message.make_mixed()
    second = EmailMessage()
    second.set_content(
        '<p>Straße</p><a href="https://example.com/b">B</a>'.encode("iso-8859-1"),
        maintype="text",
        subtype="html",
        cte="base64",
        disposition="inline",
    )
    second.set_param("charset", "iso-8859-1")
    message.attach(second)
    message.add_attachment(bytes(range(256)), maintype="application", subtype="octet-stream")
    original = message.as_bytes(policy=policy.SMTP)

    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.sendmail("news@example.com", ["reader@example.org"], original)

    [message] = delivered(tmp_path / "outbox")
    arrived = message_from_bytes(message.read_bytes(), policy=policy.default)
    key = (tmp_path / "signing.key").read_text().strip()
    codec = TokenCodec([decode_signing_key(key)])
    htmls = [p for p in arrived.walk() if p.get_content_type() == "text/html"]
    assert [p.get_content_charset() for p in htmls] == ["utf-8", "iso-8859-1"]
    assert [p["Content-Transfer-Encoding"] for p in htmls] == ["quoted-printable", "base64"]
    urls = []
    for part in htmls:
        html = part.get_content()
        assert "ses:" not in html
        [pixel] = re.findall(r'src="https://t\.example/o/([^"]+)"', html)
        message_id = codec.read_open(pixel).message_id
        for token in re.findall(r'href="https://t\.example/c/([^"]+)"', html):
            click = codec.read_click(token.replace("&amp;", "&"))
            assert click.message_id == message_id
            urls.append((click.url, click.tags))
    assert urls == [
        ("https://example.com/a?x=1&y=2", {"slot": ("hero",)}),
        ("https://example.com/b", {}),
    ]
    original_parsed = message_from_bytes(original, policy=policy.default)
    for kind in ("text/plain", "application/octet-stream"):
        [before] = [p for p in original_parsed.walk() if p.get_content_type() == kind]
        [after] = [p for p in arrived.walk() if p.get_content_type() == kind]
        assert after.as_bytes() == before.as_bytes()
    assert_clean_exit(running, signal.SIGTERM)
