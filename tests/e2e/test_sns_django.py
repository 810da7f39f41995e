"""SNS-compatible destinations read by a real SES consumer: django-ses's
SESEventWebhookView in a small Django project (tests/fixtures/sns_django), signature
verification on, fetching the signing certificate over HTTPS from the tracker behind
nginx, with a test CA. `pixelpost serve` relays a tracked message to two recipients, one
refused by the upstream; the recipient opens and clicks through nginx and complains
through the intake. Send, Delivery, Open, Click, Bounce and Complaint reach the Django
receivers with the fields django-ses and its users read; a tampered notification is
refused. django-ses never visits a SubscribeURL off amazonaws.com: a destination that
confirms waits until the operator visits the one django-ses logs."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import smtplib
import sqlite3
import ssl
import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from tests.e2e.conftest import BIN, ROOT, Running, start, until
from tests.e2e.test_serve import complaint_about
from tests.net import free_port
from tests.nginx import tls_front
from tests.sink import ThreadedSink

PROJECT = ROOT / "tests" / "fixtures" / "sns_django"
LINK = "https://shop.example.com/spring-sale"
READER_IP = "203.0.113.7"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TOPIC = "arn:pixelpost:sns:local:0:django"
"""The destination whose endpoint does not confirm (`confirm = false`): its default ARN."""
CONFIRMING_TOPIC = "arn:pixelpost:sns:local:0:confirming"
SIGNALS = ("send", "delivery", "open", "click", "bounce", "complaint")


def write_config(tmp_path: Path, *, sink_port: int, public_url: str, webhook: str) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
hostname = "relay.test"
spool = "{tmp_path / "spool"}"

[upstream]
url = "smtp://127.0.0.1:{sink_port}"

[tracker]
listen = "127.0.0.1:0"
public_url = "{public_url}"
trusted_proxies = ["127.0.0.1/32"]
journal = "{tmp_path / "hits"}"

[intake]
listen = "127.0.0.1:0"
domains = ["fbl.example.net"]

[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"

[signing]
key_file = "{tmp_path / "signing.key"}"

[sns]
key = "{tmp_path / "sns" / "signing-key.pem"}"
certificate = "{tmp_path / "sns" / "signing-cert.pem"}"

[config_sets.app]
destinations = ["django", "confirming"]

# django-ses verifies SHA1withRSA only, and visits no SubscribeURL but Amazon's.
[destinations.django]
type = "sns"
url = "{webhook}"
signature_version = "1"
confirm = false
retry_delays = ["1s"]

[destinations.confirming]
type = "sns"
url = "{webhook}"
signature_version = "1"
events = ["send"]
retry_delays = ["1s"]
"""
    )
    return path


@pytest.fixture
def front_port() -> int:
    """nginx's HTTPS port: the tracker's public URL and django-ses's trusted domain name
    it before nginx starts (nginx cannot say which port 0 gave it)."""
    return free_port()


@pytest.fixture
def django_project(
    tmp_path: Path, ca_file: Path, front_port: int, processes: list[Running]
) -> tuple[str, Path, Path, Running]:
    """Starts the Django project; its webhook's URL, the JSON lines its receivers
    write, its database, and its process. The trusted domain is the netloc of the
    tracker's public URL, port and all: django-ses compares the URL's netloc."""
    events, database = tmp_path / "django-events.jsonl", tmp_path / "django.sqlite3"
    env = {
        "SNS_DJANGO_EVENTS": str(events),
        "SNS_DJANGO_DB": str(database),
        "SNS_DJANGO_TRUSTED_DOMAIN": f"127.0.0.1:{front_port}",
        "SNS_DJANGO_TOPICS": f"{TOPIC},{CONFIRMING_TOPIC}",
        "REQUESTS_CA_BUNDLE": str(ca_file),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    running = start([str(BIN / "python"), "serve.py"], cwd=PROJECT, env=env)
    processes.append(running)
    return f"{running.value('django')}/ses/events/", events, database, running


def received(events: Path) -> list[dict[str, Any]]:
    """What the Django receivers were given so far, a line each."""
    if not events.exists():
        return []
    return [json.loads(line) for line in events.read_text().splitlines()]


def by_signal(events: Path, topic: str) -> dict[str, list[dict[str, Any]]]:
    """The receivers' lines for notifications of `topic`, by signal."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in SIGNALS}
    for line in received(events):
        if line["topic"] == topic:
            found[line["signal"]].append(line)
    return found


def https(
    url: str, ca: trustme.CA, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A GET over HTTPS, the certificate verified with the tests' CA; redirects not
    followed."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context, timeout=10
    )
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    """A POST as SNS makes it (text/plain, the JSON message as the body)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("POST", parts.path, body=body, headers={"Content-Type": "text/plain"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def newsletter() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "ann@example.org, gone@example.org"
    message["Subject"] = "Spring is here"
    message["X-Config-Set"] = "app"
    message.set_content("See it in HTML.")
    message.add_alternative(
        f'<html><body><p>Spring is here.</p><a href="{LINK}">See the sale</a></body></html>',
        subtype="html",
    )
    return message


def tracked(content: bytes) -> tuple[str, str]:
    """The pixel and the tracked link of a delivered copy."""
    html = message_from_bytes(content, policy=policy.default).get_body(("html",))
    assert html is not None
    text = html.get_content()  # type: ignore[attr-defined]
    [pixel] = re.findall(r'src="([^"]+/o/[^"]+)"', text)
    [link] = re.findall(r'href="([^"]+/c/[^"]+)"', text)
    return pixel, link


def blacklisted(database: Path) -> set[str]:
    """django-ses's blacklist, which its own receivers fill from bounces and complaints."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT email FROM django_ses_blacklistedemail").fetchall()
    return {email for (email,) in rows}


@pytest.mark.slow
def test_django_ses_takes_every_event_with_its_signature_verified(
    tmp_path: Path,
    ca: trustme.CA,
    sink: ThreadedSink,
    processes: list[Running],
    front_port: int,
    django_project: tuple[str, Path, Path, Running],
) -> None:
    webhook, events, database, django = django_project
    public_url = f"https://127.0.0.1:{front_port}"
    sink.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"
    config = write_config(tmp_path, sink_port=sink.port, public_url=public_url, webhook=webhook)
    keygen = subprocess.run(
        [str(BIN / "pixelpost"), "sns", "keygen", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert keygen.returncode == 0, keygen.stderr
    assert f"SigningCertURL: {public_url}/sns/SimpleNotificationService-" in keygen.stdout

    pixelpost = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(pixelpost)
    tracker = pixelpost.http_url.removeprefix("http://")
    with tls_front(upstream=tracker, ca=ca, folder=tmp_path / "nginx", port=front_port):
        with smtplib.SMTP("127.0.0.1", pixelpost.smtp_port, timeout=10) as client:
            client.send_message(
                newsletter(), "news@example.com", ["ann@example.org", "gone@example.org"]
            )
        sink.handler.wait_for(2)  # ann's copy, and the bounce notification to the sender
        [copy] = [a.content for a in sink.handler.arrivals if a.rcpt_tos == ["ann@example.org"]]
        pixel, link = tracked(copy)
        assert pixel.startswith(f"{public_url}/o/")

        # The recipient reads and clicks, through nginx, then reports it as spam.
        browser = {"User-Agent": CHROME, "X-Forwarded-For": READER_IP}
        assert https(pixel, ca, browser)[0] == 200
        status, headers, _ = https(link, ca, browser)
        assert (status, headers["Location"]) == (302, LINK)
        intake = pixelpost.value("intake")
        host, port = intake.rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=10) as client:
            client.sendmail("", ["fbl@fbl.example.net"], complaint_about(copy))

        def every_signal() -> dict[str, list[dict[str, Any]]] | None:
            found = by_signal(events, TOPIC)
            counts = {name: len(lines) for name, lines in found.items()}
            expected = {"send": 2, "delivery": 1, "open": 1, "click": 1, "bounce": 1}
            return found if counts == {**expected, "complaint": 1} else None

        until(every_signal, f"every signal in {events}", within=30)
        found = by_signal(events, TOPIC)

        # The confirming destination sent a SubscriptionConfirmation, verified and
        # answered 200, whose SubscribeURL django-ses will not visit (not Amazon's): its
        # Send waits for the operator to visit the URL django-ses logged.
        def logged_subscribe_url() -> str | None:
            said = re.search(r'Untrusted SubscribeURL: "([^"]+)"', django.stderr)
            return said[1] if said else None

        until(logged_subscribe_url, "django-ses logging the SubscribeURL it did not visit")
        subscribe_url = logged_subscribe_url()
        assert subscribe_url is not None
        assert subscribe_url.startswith(f"{public_url}/sns/confirm?SubscriptionArn=")
        assert "Received unverified notification" not in django.stderr
        assert by_signal(events, CONFIRMING_TOPIC)["send"] == []
        status, _, body = https(subscribe_url, ca)
        assert status == 200
        assert b"<ConfirmSubscriptionResponse" in body
        assert CONFIRMING_TOPIC.encode() in body
        until(
            lambda: len(by_signal(events, CONFIRMING_TOPIC)["send"]) == 2,
            "the confirming destination's two Send events, once confirmed",
        )

    # What django-ses and its users read, as SES would have sent it.
    ann_id = found["delivery"][0]["mail"]["messageId"]
    for name in ("delivery", "open", "click", "complaint"):
        [line] = found[name]
        assert line["mail"]["messageId"] == ann_id, name
        assert line["mail"]["destination"] == ["ann@example.org"], name
        assert line["mail"]["source"].endswith("news@example.com"), name
    sends = {line["mail"]["destination"][0]: line["mail"]["messageId"] for line in found["send"]}
    assert sends["ann@example.org"] == ann_id
    [bounce] = found["bounce"]
    assert bounce["mail"]["messageId"] == sends["gone@example.org"] != ann_id
    assert bounce["object"]["bounceType"] == "Permanent"
    [bounced] = bounce["object"]["bouncedRecipients"]
    assert bounced["emailAddress"] == "gone@example.org"
    assert bounced["status"].startswith("5.1.1")
    assert found["delivery"][0]["object"]["recipients"] == ["ann@example.org"]
    opened = found["open"][0]["object"]
    assert (opened["ipAddress"], opened["userAgent"]) == (READER_IP, CHROME)
    clicked = found["click"][0]["object"]
    assert (clicked["link"], clicked["ipAddress"]) == (LINK, READER_IP)
    complaint = found["complaint"][0]["object"]
    assert complaint["complainedRecipients"] == [{"emailAddress": "ann@example.org"}]
    assert complaint["complaintFeedbackType"] == "abuse"
    # django-ses's own receivers read the bounce's and the complaint's recipients.
    assert blacklisted(database) == {"gone@example.org", "ann@example.org"}

    # Verification is on: the bounce's notification with its Message changed is
    # refused; as sent, it is taken (again).
    notification = json.loads(bounce["raw"])
    assert notification["SignatureVersion"] == "1"
    assert notification["SigningCertURL"].startswith(f"{public_url}/sns/")
    tampered = dict(
        notification, Message=notification["Message"].replace("Permanent", "Transient")
    )
    assert tampered["Message"] != notification["Message"]
    assert post(webhook, json.dumps(tampered).encode()) == (400, b"Signature verification failed.")
    assert post(webhook, bounce["raw"].encode())[0] == 200
    until(lambda: len(by_signal(events, TOPIC)["bounce"]) == 2, "the replayed bounce")
