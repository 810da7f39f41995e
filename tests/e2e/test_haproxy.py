"""The README's HAProxy configuration in front of `pixelpost serve` with
`relay.proxy_protocol`: STARTTLS on one port, implicit TLS on the other, the client
HAProxy names is the client (never an open relay, though HAProxy's own address is in
allow_networks), and authenticated mail goes through from anywhere."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from pixelpost.core.passwords import hash_password
from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, delivered, readme_block, start, until
from tests.net import BALANCER, UNVERIFIED_TLS, free_port
from tests.tools import need

CLIENT = "127.0.0.3"
"""A mail client outside allow_networks."""
PASSWORD = "haproxy test password"


def wait_listening(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_readme_haproxy_example_with_starttls_and_implicit_tls(
    tmp_path: Path, processes: list[Running]
) -> None:
    haproxy = need("haproxy")
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    relay = f"""allow_networks = ["{BALANCER}/32"]
proxy_protocol = true

[relay.tls]
cert = "{tmp_path / "relay.crt"}"
key = "{tmp_path / "relay.key"}"
listen_tls = "127.0.0.1:0"

[[relay.users]]
name = "app"
password_hash = "{hash_password(PASSWORD, log2_n=4)}"
"""
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"maildir:{tmp_path / 'outbox'}", tmp_path, relay=relay))
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    smtps_port = int(running.value("smtps").rsplit(":", 1)[1])

    submission, submissions = free_port(), free_port()
    site = readme_block("haproxy")
    site = site.replace("bind :587", f"bind 127.0.0.1:{submission}")
    site = site.replace("bind :465", f"bind 127.0.0.1:{submissions}")
    site = site.replace("127.0.0.1:2525", f"127.0.0.1:{running.smtp_port}")
    site = site.replace("127.0.0.1:2465", f"127.0.0.1:{smtps_port}")
    site = site.replace("send-proxy-v2", f"send-proxy-v2 source {BALANCER}")
    (tmp_path / "haproxy.cfg").write_text(site)
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    balancer = subprocess.Popen(
        [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(submission)
        wait_listening(submissions)
        message = b"From: app@example.com\r\nSubject: through haproxy\r\n\r\nhello\r\n"

        # STARTTLS, no login: the client HAProxy names is outside allow_networks.
        with smtplib.SMTP("127.0.0.1", submission, source_address=(CLIENT, 0)) as client:
            client.starttls(context=UNVERIFIED_TLS)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.sendmail("app@example.com", ["victim@example.org"], message)
            assert refused.value.recipients["victim@example.org"][0] == 554
        # Implicit TLS, no login: refused the same way.
        with (
            smtplib.SMTP_SSL(
                "127.0.0.1", submissions, source_address=(CLIENT, 0), context=UNVERIFIED_TLS
            ) as client,
            pytest.raises(smtplib.SMTPRecipientsRefused),
        ):
            client.sendmail("app@example.com", ["victim@example.org"], message)
        # Logged in, over either: relayed.
        with smtplib.SMTP("127.0.0.1", submission, source_address=(CLIENT, 0)) as client:
            client.starttls(context=UNVERIFIED_TLS)
            client.login("app", PASSWORD)
            client.sendmail("app@example.com", ["one@example.org"], message)
        with smtplib.SMTP_SSL(
            "127.0.0.1", submissions, source_address=(CLIENT, 0), context=UNVERIFIED_TLS
        ) as client:
            client.login("app", PASSWORD)
            client.sendmail("app@example.com", ["two@example.org"], message)
        found = delivered(tmp_path / "outbox", 2)
        assert len(found) == 2
        assert all(b"Subject: through haproxy" in path.read_bytes() for path in found)
    finally:
        balancer.terminate()
        balancer.wait(10)
        assert balancer.stdout is not None
        balancer.stdout.close()

    # The events say who sent them: the client, not HAProxy.
    events = tmp_path / "events.jsonl"

    def sent() -> list[dict[str, object]]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [event for line in lines if (event := json.loads(line))["eventType"] == "Send"]

    until(lambda: len(sent()) >= 2, "the two Send events", within=15)
    sends = sent()
    assert len(sends) == 2
    for send in sends:
        mail = send["mail"]
        assert isinstance(mail, dict)
        assert mail["tags"]["ses:source-ip"] == [CLIENT]
        assert mail["tags"]["ses:caller-identity"] == ["app"]
    assert running.stop() == 0
    assert "Traceback" not in running.stderr
