"""The whole job on one machine, as a user runs it: mail through `pixelpost serve`, the
pixel and a link fetched with curl, events at a webhook and in a file."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import smtplib
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks import Webhook

from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.e2e.conftest import BIN, Running, delivered, start, until
from tests.net import free_port
from tests.receiver import ThreadedReceiver
from tests.tools import need

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    found = ThreadedReceiver()
    found.start()
    yield found
    found.stop()


def write_config(tmp_path: Path, receiver_port: int, http_port: int) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
[upstream]
url = "maildir:{tmp_path / "outbox"}"
[tracker]
listen = "127.0.0.1:{http_port}"
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[config_sets.marketing]
destinations = ["app", "archive"]
[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{receiver_port}/events"
secret = "{SECRET}"
events = ["all"]
retry_delays = ["300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]
timeout = "2s"
[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
"""
    )
    return path


def newsletter() -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Spring"
    message["X-Config-Set"] = "marketing"
    message["X-Message-Tags"] = "campaign=spring"
    message.set_content("text")
    message.add_alternative(
        '<p>Hello</p><a ses:tags="slot:hero" href="https://shop.example.com/sale?a=1&amp;b=2">'
        "Sale</a></body>",
        subtype="html",
    )
    return message.as_bytes(policy=policy.SMTP)


def curl(url: str) -> tuple[int, dict[str, str]]:
    result = subprocess.run(
        [need("curl"), "-s", "-D", "-", "-o", "/dev/null", url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return status, headers


def send_and_find_links(running: Running, tmp_path: Path) -> tuple[str, str]:
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.sendmail("news@example.com", ["reader@example.org"], newsletter())
    [message] = delivered(tmp_path / "outbox")
    html = message_from_bytes(message.read_bytes(), policy=policy.default).get_body(("html",))
    assert html is not None
    text = html.get_content()
    [pixel] = re.findall(r'src="([^"]+/o/[^"]+)"', text)
    [link] = re.findall(r'href="([^"]+/c/[^"]+)"', text)
    return pixel, link.replace("&amp;", "&")


def test_send_open_click_reach_the_webhook_and_the_file(
    tmp_path: Path, receiver: ThreadedReceiver, processes: list[Running]
) -> None:
    http_port = free_port()
    config = write_config(tmp_path, receiver.port, http_port)
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    pixel, link = send_and_find_links(running, tmp_path)

    assert curl(pixel)[0] == 200
    status, headers = curl(link)
    assert status == 302
    assert headers["location"] == "https://shop.example.com/sale?a=1&b=2"
    tampered = link[:-12] + ("x" if link[-12] != "x" else "y") + link[-11:]
    status, headers = curl(tampered)
    assert status == 404
    assert "location" not in headers

    hook = receiver.receiver
    hook.wait_for(4)
    verifier = Webhook(SECRET)
    events = [verifier.verify(r.body, r.headers) for r in hook.requests]
    assert sorted(e["eventType"] for e in events) == ["Click", "Delivery", "Open", "Send"]
    for event in events:
        mail = event["mail"]
        assert set(mail) >= {
            "timestamp",
            "source",
            "messageId",
            "destination",
            "headersTruncated",
            "headers",
            "commonHeaders",
            "tags",
        }
        assert mail["tags"]["ses:configuration-set"] == ["marketing"]
        assert mail["tags"]["campaign"] == ["spring"]
        assert mail["tags"]["ses:source-ip"] == ["127.0.0.1"]
        assert mail["tags"]["ses:from-domain"] == ["example.com"]
        assert mail["destination"] == ["reader@example.org"]
    click = next(e for e in events if e["eventType"] == "Click")["click"]
    assert click["link"] == "https://shop.example.com/sale?a=1&b=2"
    assert click["linkTags"] == {"slot": ["hero"]}
    assert click["userAgent"].startswith("curl/")
    events_file = tmp_path / "events.jsonl"
    until(  # the file destination delivers on its own schedule
        lambda: events_file.exists() and len(events_file.read_text().splitlines()) >= 4,
        "four events in the file",
        within=15,
    )
    assert running.stop(signal.SIGTERM) == 0
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert sorted(json.dumps(e, sort_keys=True) for e in lines) == sorted(
        json.dumps(e, sort_keys=True) for e in events
    )


def test_a_receiver_down_across_retries_gets_every_event_once_back(
    tmp_path: Path, receiver: ThreadedReceiver, processes: list[Running]
) -> None:
    hook = receiver.receiver
    hook.status = 503
    http_port = free_port()
    config = write_config(tmp_path, receiver.port, http_port)
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    pixel, link = send_and_find_links(running, tmp_path)
    curl(pixel)
    curl(link)

    hook.wait_for(4 * 3)  # each of the four events refused three times
    failed = len(hook.requests)
    hook.status = 200
    hook.wait_for(failed + 4)
    ids = {r.headers["webhook-id"] for r in hook.requests}
    delivered = [r.headers["webhook-id"] for r in hook.requests[failed:]]
    assert set(delivered) == ids
    assert len(ids) == 4
    assert running.stop(signal.SIGTERM) == 0


def test_no_answered_hit_is_lost_when_the_tracker_is_killed(
    tmp_path: Path, processes: list[Running]
) -> None:
    http_port = free_port()
    config = write_config(tmp_path, 9, http_port)
    running = start([str(BIN / "pixelpost"), "tracker", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    key = (tmp_path / "signing.key").read_text().strip()
    codec = TokenCodec([decode_signing_key(key)])
    base = f"http://127.0.0.1:{http_port}"
    urls = [
        f"{base}/o/{codec.open_token('01a228d20a21020c7c34c59663927ded')}",
        f"{base}/c/"
        + codec.click_token("01a228d20a21020c7c34c59663927ded", 0, "https://e.com/", {}),
    ]
    answered = 0
    killed = threading.Event()

    async def load() -> None:
        nonlocal answered
        async with aiohttp.ClientSession() as session:

            async def worker(n: int) -> None:
                nonlocal answered
                while not killed.is_set():
                    try:
                        async with session.get(urls[n % 2], allow_redirects=False) as response:
                            await response.read()
                            if response.status in (200, 302) and not killed.is_set():
                                answered += 1
                                if answered >= 300:
                                    running.process.kill()  # SIGKILL, right after an answer
                                    killed.set()
                    except aiohttp.ClientError:
                        killed.set()

            await asyncio.gather(*(worker(n) for n in range(20)))

    asyncio.run(load())
    running.process.wait(10)
    with sqlite3.connect(tmp_path / "pixelpost.db") as connection:
        (recorded,) = connection.execute(
            "SELECT count(*) FROM events WHERE type IN ('open', 'click')"
        ).fetchone()
    assert answered >= 300
    assert recorded >= answered
