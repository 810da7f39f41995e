"""A bounce that comes days later, made by a real Postfix: `pixelpost serve` relays to a
throwaway Postfix (Debian's package, configured here in a directory of its own) that
accepts every recipient of its local domain, then finds one unknown and sends its DSN
to the copy's return path, which its transport table routes to pixelpost's intake.
The Bounce reaches the webhook with the copy's message id and recipient, the address
is on the suppression list, and the next message to it is not sent."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BIN, Running, start, until
from tests.net import free_port
from tests.postfix import throwaway_postfix
from tests.receiver import ThreadedReceiver
from tests.tools import need

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOCAL_DOMAIN = "mail.test"
RETURN_DOMAIN = "bounces.test"


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    found = ThreadedReceiver()
    found.start()
    yield found
    found.stop()


def write_config(tmp_path: Path, postfix_port: int, intake_port: int, receiver_port: int) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
default_config_set = "marketing"
[relay]
listen = "127.0.0.1:0"
hostname = "relay.test"
spool = "{tmp_path / "spool"}"
[upstream]
url = "smtp://127.0.0.1:{postfix_port}"
[tracker]
listen = "127.0.0.1:0"
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[intake]
listen = "127.0.0.1:{intake_port}"
[config_sets.marketing]
return_path_domain = "{RETURN_DOMAIN}"
destinations = ["app"]
[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{receiver_port}/events"
secret = "{SECRET}"
events = ["send", "delivery", "bounce"]
retry_delays = ["300ms"]
"""
    )
    return path


def message(to: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "News <news@example.com>"
    mail["To"] = to
    mail["Subject"] = "Spring sale"
    mail.set_content("Hello")
    mail.add_alternative('<p>Hello <a href="https://shop.example.com/">shop</a></p>', "html")
    return mail.as_bytes()


def events(receiver: ThreadedReceiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.receiver.requests]


def test_a_real_postfix_dsn_becomes_a_bounce_and_suppresses_the_next_message(
    tmp_path: Path, postfix_dir: Path, receiver: ThreadedReceiver, processes: list[Running]
) -> None:
    need("postfix")
    if os.geteuid() != 0:
        pytest.fail("a throwaway Postfix needs root (its daemons drop privileges)")
    postfix_port, intake_port = free_port(), free_port()
    config = write_config(tmp_path, postfix_port, intake_port, receiver.port)
    settings = {
        # Mail for the local domain is accepted for any user at SMTP time and found
        # unknown only by local delivery, which then bounces it: a late bounce.
        "mydestination": LOCAL_DOMAIN,
        "local_recipient_maps": "",
        "relayhost": "",
        "transport_maps": f"inline:{{ {RETURN_DOMAIN}=smtp:[127.0.0.1]:{intake_port} }}",
        "myhostname": "postfix.test",
        # The DSN can reach the intake before pixelpost has recorded the copy (Postfix
        # bounces within milliseconds): deferred, it is tried again a second later.
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
    }
    with throwaway_postfix(postfix_dir, postfix_port, 0, settings) as postfix:
        running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
        processes.append(running)
        assert running.value("intake") == f"127.0.0.1:{intake_port}"
        gone = f"nosuchuser@{LOCAL_DOMAIN}"
        with smtplib.SMTP("127.0.0.1", running.smtp_port) as client:
            client.sendmail("news@example.com", [gone], message(gone))

        until(
            lambda: any(e["eventType"] == "Bounce" for e in events(receiver)),
            f"a Bounce at the webhook (Postfix's log: {postfix.log_file})",
            within=60,
        )
        [send] = [e for e in events(receiver) if e["eventType"] == "Send"]
        [bounce] = [e for e in events(receiver) if e["eventType"] == "Bounce"]
        assert bounce["mail"]["messageId"] == send["mail"]["messageId"]
        assert bounce["mail"]["destination"] == [gone]
        assert bounce["bounce"]["bounceType"] == "Permanent"
        [bounced] = bounce["bounce"]["bouncedRecipients"]
        assert bounced["emailAddress"] == gone
        assert bounced["status"].startswith("5.1.")
        assert "unknown user" in bounced["diagnosticCode"]
        assert bounce["bounce"]["reportingMTA"] == "dns; postfix.test"
        with urllib.request.urlopen(f"{running.http_url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'pixelpost_intake_messages_total{outcome="bounce"} 1.0' in metrics
        log = postfix.log_file.read_text(errors="replace")
        assert f"relay=127.0.0.1[127.0.0.1]:{intake_port}" in log  # the DSN went to the intake

        listed = subprocess.run(
            [str(BIN / "pixelpost"), "suppression", "list", "-c", str(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert gone in listed
        assert "BOUNCE" in listed

        with smtplib.SMTP("127.0.0.1", running.smtp_port) as client:
            client.sendmail("news@example.com", [gone], message(gone))
        until(
            lambda: sum(e["eventType"] == "Bounce" for e in events(receiver)) == 2,
            "a second Bounce",
        )
        second = [e for e in events(receiver) if e["eventType"] == "Bounce"][1]
        assert second["bounce"]["bounceSubType"] == "OnAccountSuppressionList"
        assert sum(e["eventType"] == "Delivery" for e in events(receiver)) == 1
        # Postfix bounced one message for the address: the second never reached it.
        assert postfix.log_file.read_text(errors="replace").count("status=bounced") == 1
    running.stop()
