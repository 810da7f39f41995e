"""Unsubscribing as a recipient does it, through `pixelpost serve`: a newsletter sent
through the relay, its unsubscribe page opened in headless Chromium (read as assistive
technology reads it, on a phone's width), the button pressed, the Subscription event
at a real webhook receiver; then subscribed again. And a template that does not fit
stops the start with a line that names it."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import subprocess
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.browser import Chromium, Page
from tests.e2e.conftest import BIN, Running, delivered, start
from tests.net import free_port
from tests.receiver import ThreadedReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
READER = "Reader@Example.org"
PHONE_WIDTH = 360


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    found = ThreadedReceiver()
    found.start()
    yield found
    found.stop()


def write_config(tmp_path: Path, receiver_port: int, http_port: int, extra: str = "") -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
spool = "{tmp_path / "spool"}"
[upstream]
url = "maildir:{tmp_path / "outbox"}"
[tracker]
listen = "127.0.0.1:{http_port}"
{extra}
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[config_sets.newsletter]
destinations = ["app"]
[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{receiver_port}/events"
secret = "{SECRET}"
events = ["subscription"]
retry_delays = ["300ms"]
timeout = "2s"
"""
    )
    return path


def newsletter() -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = READER
    message["Subject"] = "Spring"
    message["X-Config-Set"] = "newsletter"
    message.set_content("text")
    message.add_alternative("<p>Hello</p>", subtype="html")
    return message.as_bytes(policy=policy.SMTP)


def unsubscribe_url(running: Running, tmp_path: Path) -> tuple[str, str]:
    """Send a newsletter; the unsubscribe URL of the copy delivered, and its id. The
    copy is named by its pixel; its URL is signed with the tracker's own key."""
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.sendmail("news@example.com", [READER], newsletter())
    [copy] = delivered(tmp_path / "outbox")
    html = message_from_bytes(copy.read_bytes(), policy=policy.default).get_body(("html",))
    assert html is not None
    [pixel] = re.findall(r'src="[^"]+/o/([^"]+)"', html.get_content())
    codec = TokenCodec([decode_signing_key((tmp_path / "signing.key").read_text().strip())])
    message_id = codec.read_open(pixel).message_id
    token = codec.unsubscribe_token(
        message_id, address=READER, config_set="newsletter", account=False
    )
    return f"{running.http_url}/u/{token}", message_id


async def accessible(page: Page) -> list[tuple[str, str]]:
    """(role, name) of each heading and button, as assistive technology reads them."""
    await page.send("Accessibility.enable")
    tree = await page.send("Accessibility.getFullAXTree")
    found = []
    for node in tree["nodes"]:
        role = node.get("role", {}).get("value")
        if role in ("heading", "button") and not node.get("ignored"):
            found.append((role, node.get("name", {}).get("value", "")))
    return found


async def events(receiver: ThreadedReceiver, count: int) -> list[dict[str, Any]]:
    hook = receiver.receiver
    await hook.wait(count)
    verifier = Webhook(SECRET)
    return [verifier.verify(r.body, r.headers) for r in hook.requests]


async def press(page: Page, expected_heading: str) -> None:
    async with page.navigation():
        await page.click("button[type=submit]")
    heading = await page.wait_for("document.querySelector('h1')?.textContent")
    assert heading == expected_heading


async def browse(url: str, message_id: str, receiver: ThreadedReceiver) -> None:
    async with Chromium() as browser:
        page = await browser.new_page()
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE_WIDTH, "height": 740, "deviceScaleFactor": 2, "mobile": True},
        )
        await page.goto(url)
        assert await page.evaluate("document.documentElement.lang") == "en"
        assert await accessible(page) == [("heading", "Unsubscribe"), ("button", "Unsubscribe")]
        text = await page.evaluate("document.querySelector('main').innerText")
        assert f"Unsubscribe {READER} from newsletter's mail?" in text
        # Readable on a phone: nothing wider than its screen.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
        assert receiver.receiver.requests == []  # opening the page changed nothing

        await press(page, "You are unsubscribed")
        assert await accessible(page) == [
            ("heading", "You are unsubscribed"),
            ("button", "Subscribe again"),
        ]
        [unsubscribed] = await events(receiver, 1)
        assert unsubscribed["eventType"] == "Subscription"
        assert unsubscribed["mail"]["messageId"] == message_id
        assert unsubscribed["subscription"]["source"] == "UnsubscribeLink"
        assert unsubscribed["subscription"]["contactList"] == "newsletter"
        assert unsubscribed["subscription"]["newTopicPreferences"]["unsubscribeAll"] is True

        await press(page, "You are subscribed again")
        assert await accessible(page) == [
            ("heading", "You are subscribed again"),
            ("button", "Unsubscribe"),
        ]
        _, resubscribed = await events(receiver, 2)
        assert resubscribed["subscription"]["newTopicPreferences"]["unsubscribeAll"] is False
        assert page.errors == []  # no CSP violation, no failed load


def test_a_reader_unsubscribes_in_chromium_and_subscribes_again(
    tmp_path: Path, receiver: ThreadedReceiver, processes: list[Running]
) -> None:
    config = write_config(tmp_path, receiver.port, free_port())
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    url, message_id = unsubscribe_url(running, tmp_path)

    asyncio.run(browse(url, message_id, receiver))
    ids = [json.loads(r.body)["eventType"] for r in receiver.receiver.requests]
    assert ids == ["Subscription", "Subscription"]


def test_a_template_that_does_not_fit_stops_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    (folder / "fr").mkdir(parents=True)
    (folder / "fr" / "unsubscribe.html").write_text("<p>Se désabonner de $list ?</p>")
    config = write_config(tmp_path, 9, free_port(), extra='templates = "pages"')
    result = subprocess.run(
        [BIN / "pixelpost", "serve", "-c", config],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"pixelpost: tracker.templates: {folder / 'fr'}/unsubscribe.html: "
        "the placeholder $address is missing"
    )
