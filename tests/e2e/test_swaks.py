"""Issue 6's acceptance: swaks with --tls --auth against `pixelpost serve` configured
from config.example.toml plus a certificate; the user is the events' caller identity."""

from __future__ import annotations

import json
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from pixelpost.passwords import hash_password
from tests.e2e.conftest import BIN, Running, delivered, start

ROOT = Path(__file__).resolve().parents[2]


def example_with_tls_and_a_user(tmp_path: Path, password: str) -> Path:
    """config.example.toml with its commented [relay.tls] and [[relay.users]] blocks
    turned on, and free ports."""
    issued = trustme.CA().issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    text = (ROOT / "config.example.toml").read_text()
    replacements = [
        ('# [[relay.users]]\n# name = "app"', '[[relay.users]]\nname = "app"'),
        ("# password_hash = ", "password_hash = "),
        ('# from_domains = ["example.com"]', 'from_domains = ["example.com"]'),
        ("# [relay.tls]\n# cert = ", "[relay.tls]\ncert = "),
        ("# key = ", "key = "),
        ('listen = "127.0.0.1:2525"', 'listen = "127.0.0.1:0"'),
        ('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'),
    ]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    text = re.sub(r'password_hash = "[^"]*"', f'password_hash = "{hash_password(password)}"', text)
    text = text.replace('"/etc/pixelpost/tls.crt"', f'"{tmp_path / "relay.crt"}"')
    text = text.replace('"/etc/pixelpost/tls.key"', f'"{tmp_path / "relay.key"}"')
    path = tmp_path / "pixelpost.toml"
    path.write_text(text)
    return path


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run)")
def test_swaks_over_starttls_with_auth(tmp_path: Path, processes: list[Running]) -> None:
    config = example_with_tls_and_a_user(tmp_path, "s3cret")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)

    server = ["--server", f"127.0.0.1:{running.smtp_port}", "--tls"]

    def swaks(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "swaks",
                *server,
                "--to",
                "someone@example.org",
                "--header",
                "X-Config-Set: default",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    wrong = swaks("--auth", "PLAIN", "--auth-user", "app", "--auth-password", "wrong")
    assert wrong.returncode != 0
    assert "535" in wrong.stdout
    login = ["--auth", "PLAIN", "--auth-user", "app", "--auth-password", "s3cret"]
    sent = swaks(*login, "--from", "news@example.com")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "=== TLS started" in sent.stdout

    [message] = delivered(tmp_path / "var" / "outbox")
    assert b"Subject: test" in message.read_bytes()
    events = tmp_path / "var" / "events.jsonl"
    for _ in range(100):
        lines = events.read_text().splitlines() if events.exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    kinds = {json.loads(line)["eventType"]: json.loads(line) for line in lines}
    assert kinds["Send"]["mail"]["tags"]["ses:caller-identity"] == ["app"]
    assert running.stop() == 0


def test_sighup_loads_a_renewed_certificate_without_dropping_connections(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = example_with_tls_and_a_user(tmp_path, "s3cret")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test reads the certificate, it does not trust it

    def certificate(client: smtplib.SMTP) -> bytes:
        client.ehlo()
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None
        return der

    kept = smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10)
    before = certificate(kept)
    renewed = trustme.CA().issue_cert("127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    renewed.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    running.process.send_signal(signal.SIGHUP)

    deadline = time.monotonic() + 10
    while True:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as fresh:
            after = certificate(fresh)
        if after != before or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after != before
    assert "loaded again" in running.stderr
    kept.login("app", "s3cret")  # the connection opened before the reload still works
    kept.sendmail("news@example.com", ["someone@example.org"], b"Subject: kept\r\n\r\nhi\r\n")
    kept.quit()
    delivered(tmp_path / "var" / "outbox")
    assert running.stop() == 0
