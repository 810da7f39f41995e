"""The issue's acceptance: a realistic mix through the running system (human opens,
Apple MPP prefetches, Safe Links clicks seconds after delivery, a link checker's HEAD,
Gmail's image proxy, real clicks, a bounce), and a funnel whose numbers and flags match
what was sent: in the events, the API, `pixelpost stats` and the dashboard."""

from __future__ import annotations

import asyncio
import json
import os
import re
import smtplib
import subprocess
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp

from tests.browser import Chromium
from tests.conftest import until
from tests.e2e.conftest import BIN, Running, start
from tests.net import free_port
from tests.sink import ThreadedSink

TOKEN = "acceptance-token-0123456789"
WINDOW = 5.0
"""classify.click_after_delivery in this test's configuration."""
LINK_A = "https://shop.example.com/spring-sale"
LINK_B = "https://shop.example.com/catalogue"

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
APPLE_PROXY = "Mozilla/5.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
SAFE_LINKS_IP = "40.94.29.17"  # a scanner that looks like a browser but for its timing
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = "dashboard-funnel.png"


def write_config(tmp_path: Path, sink_port: int, http_port: int, store_url: str) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
spool = "{tmp_path / "spool"}"
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
[tracker]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
trusted_proxies = ["127.0.0.1/32"]
api_token = "{TOKEN}"
[classify]
click_after_delivery = "{WINDOW:.0f}s"
[store]
url = "{store_url}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[config_sets.newsletter]
destinations = ["archive"]
[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
"""
    )
    return path


def newsletter(campaign: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"The {campaign} collection"
    message["X-Config-Set"] = "newsletter"
    message["X-Message-Tags"] = f"campaign={campaign}"
    message.set_content("See it in HTML.")
    message.add_alternative(
        f'<html><body><h1>{campaign}</h1><a href="{LINK_A}">Sale</a>'
        f' <a href="{LINK_B}">Catalogue</a></body></html>',
        subtype="html",
    )
    return message


def links_of(content: bytes) -> tuple[str, str, str]:
    """The pixel and the two tracked links of one delivered copy."""
    html = message_from_bytes(content, policy=policy.default).get_body(("html",))
    assert html is not None
    text = html.get_content()  # type: ignore[attr-defined]
    [pixel] = re.findall(r'src="([^"]+/o/[^"]+)"', text)
    link_a, link_b = re.findall(r'href="([^"]+/c/[^"]+)"', text)
    return pixel, link_a, link_b


async def hit(
    http: aiohttp.ClientSession, url: str, *, ip: str, user_agent: str, method: str = "GET"
) -> None:
    headers = {"X-Forwarded-For": ip, "User-Agent": user_agent}
    async with http.request(method, url, headers=headers, allow_redirects=False) as response:
        assert response.status in (200, 302), (url, response.status)


async def recipients_behave(copies: dict[str, tuple[str, str, str]], delivered_at: float) -> None:
    """What the recipients' clients, proxies and scanners do with their copies."""
    async with aiohttp.ClientSession() as http:
        # On arrival: Apple's proxy fetches the pixel of its users' mail, Safe Links
        # follows every link of one tenant's, a link checker sends HEAD.
        for name in ("r0", "r1", "r2", "f0"):
            await hit(http, copies[name][0], ip="17.58.100.3", user_agent=APPLE_PROXY)
        for name in ("r3", "r4"):
            for link in copies[name][1:]:
                await hit(http, link, ip=SAFE_LINKS_IP, user_agent=CHROME)
        await hit(http, copies["f1"][1], ip="198.51.100.9", user_agent=CHROME, method="HEAD")
        assert time.monotonic() - delivered_at < WINDOW, "too slow for the window"

        # Later: people read and click. The window is what is tested, in a process whose
        # clock no test can move: what is left of it is waited out.
        await asyncio.sleep(max(0.0, delivered_at + WINDOW + 0.5 - time.monotonic()))
        await hit(http, copies["r3"][0], ip="203.0.113.3", user_agent=OUTLOOK)
        await hit(http, copies["r3"][1], ip="203.0.113.3", user_agent=OUTLOOK)
        await hit(http, copies["r5"][0], ip="203.0.113.5", user_agent=CHROME)
        await hit(http, copies["r5"][1], ip="203.0.113.5", user_agent=CHROME)
        await hit(http, copies["f2"][0], ip="66.249.84.20", user_agent=GMAIL_PROXY)
        await hit(http, copies["f2"][1], ip="198.51.100.22", user_agent=CHROME)
        await asyncio.sleep(1.2)  # a person's second click, not a burst
        await hit(http, copies["r5"][2], ip="203.0.113.5", user_agent=CHROME)
        await hit(http, copies["r5"][0], ip="203.0.113.5", user_agent=CHROME)  # reads it again


EXPECTED_TOTALS = {
    "sent": 13,
    "delivered": 12,
    "bounced": {"total": 1, "Permanent": 1, "Transient": 0, "Undetermined": 0},
    "opened": {
        "total": 8,
        "unique": 7,
        "human": {"total": 4, "unique": 3, "proxied": 1},
        "machine": {"total": 4, "unique": 4, "reasons": {"apple_mpp": 4}},
    },
    "clicked": {
        "total": 9,
        "unique": 5,
        "human": {"total": 4, "unique": 3},
        "bot": {
            "total": 5,
            "unique": 3,
            "reasons": {"click_after_delivery": 4, "head_request": 1},
        },
    },
    "rates": {
        "delivery": round(12 / 13, 4),
        "open": 0.25,
        "click": 0.25,
        "click_to_open": 1.0,
        "machine_open_share": 0.5,
        "bot_click_share": round(5 / 9, 4),
        "engagement": 0.25,  # r3, r5 and f2 opened and clicked, of 12 delivered
        "unsubscribe": 0.0,
    },
    "engaged": 3,
}


async def api(base: str, query: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{base}/api/v1/stats?{query}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


async def counted(base: str, clicks: int) -> dict[str, Any]:
    """The API's answer once the statistics have counted every hit (they are rolled up
    about once a second)."""
    deadline = time.monotonic() + 15
    while True:
        data = await api(base, "")
        if data["totals"]["clicked"]["total"] >= clicks and data["totals"]["sent"] >= 13:
            return data
        assert time.monotonic() < deadline, data["totals"]
        await asyncio.sleep(0.2)


def pick(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: data[key] for key in keys}


async def test_the_funnel_tells_people_from_machines(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running], store_url: str
) -> None:
    sink.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"
    http_port = free_port()
    config = write_config(tmp_path, sink.port, http_port, store_url)
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    base = running.http_url

    spring = [f"r{n}@example.org" for n in range(8)] + ["gone@example.org"]
    fall = [f"f{n}@example.org" for n in range(4)]
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.send_message(newsletter("spring", spring), "news@example.com", spring)
        client.send_message(newsletter("fall", fall), "news@example.com", fall)
    sink.handler.wait_for(12 + 1)  # each copy, and the bounce notification to the sender
    delivered_at = time.monotonic()
    copies = {
        arrival.rcpt_tos[0].split("@")[0]: links_of(arrival.content)
        for arrival in sink.handler.arrivals
        if arrival.rcpt_tos[0] != "news@example.com"
    }
    assert len(copies) == 12

    await recipients_behave(copies, delivered_at)

    data = await counted(base, clicks=9)
    assert pick(data["totals"], *EXPECTED_TOTALS) == EXPECTED_TOTALS

    spring_only = await api(base, "tag=campaign:spring&config_set=newsletter")
    assert pick(spring_only["totals"], "sent", "delivered") == {"sent": 9, "delivered": 8}
    assert spring_only["totals"]["opened"]["machine"]["total"] == 3
    assert spring_only["totals"]["clicked"]["human"] == {"total": 3, "unique": 2}
    by_link = await api(base, "by=link")
    assert [
        (g["key"], g["clicked"]["human"]["unique"], g["clicked"]["bot"]["unique"])
        for g in by_link["groups"]
    ] == [(LINK_A, 3, 3), (LINK_B, 1, 2)]

    # The command line agrees with the API.
    command = await asyncio.create_subprocess_exec(
        str(BIN / "pixelpost"), "stats", "-c", str(config), "--json", stdout=subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0
    assert json.loads(stdout)["totals"] == data["totals"]

    # Every event carries its verdict.
    events_file = tmp_path / "events.jsonl"

    def every_hit() -> list[dict[str, Any]] | None:
        events = [json.loads(line) for line in events_file.read_text().splitlines()]
        kinds = [e["eventType"] for e in events]
        return events if kinds.count("Open") == 8 and kinds.count("Click") == 9 else None

    events = await until(every_hit, "the 8 Open and 9 Click events in the file", within=15)
    opens = sorted(
        (e["mail"]["destination"][0][:2], e["open"]["machine"], e["open"]["machineReason"])
        for e in events
        if e["eventType"] == "Open"
    )
    assert opens == [
        ("f0", True, "apple_mpp"),
        ("f2", False, None),
        ("r0", True, "apple_mpp"),
        ("r1", True, "apple_mpp"),
        ("r2", True, "apple_mpp"),
        ("r3", False, None),
        ("r5", False, None),
        ("r5", False, None),
    ]
    assert [e["open"]["proxy"] for e in events if e["eventType"] == "Open"].count("gmail") == 1
    clicks = sorted(
        (e["mail"]["destination"][0][:2], e["click"]["link"], e["click"]["botReason"] or "")
        for e in events
        if e["eventType"] == "Click"
    )
    assert clicks == sorted(
        [
            ("f1", LINK_A, "head_request"),
            ("f2", LINK_A, ""),
            ("r3", LINK_A, ""),
            ("r3", LINK_A, "click_after_delivery"),
            ("r3", LINK_B, "click_after_delivery"),
            ("r4", LINK_A, "click_after_delivery"),
            ("r4", LINK_B, "click_after_delivery"),
            ("r5", LINK_A, ""),
            ("r5", LINK_B, ""),
        ]
    )
    assert all(
        e["click"]["bot"] is (e["click"]["botReason"] is not None)
        for e in events
        if e["eventType"] == "Click"
    )

    await dashboard_shows_the_funnel(base)


SHOWN = (
    "Object.fromEntries([...document.querySelectorAll('[data-metric]')]"
    ".map(n => [n.dataset.metric, n.textContent]))"
)
REPUTATION = (
    "Object.fromEntries([...document.querySelectorAll('#reputation tr[data-config-set]')]"
    ".map(row => [row.dataset.configSet, Object.fromEntries("
    "[...row.querySelectorAll('[data-field]')].map(n => [n.dataset.field, n.textContent]))]))"
)
ON_THE_PAGE = {
    "sent": 13,
    "delivered": 12,
    "bounced.Permanent": 1,
    "opened.human.unique": 3,
    "opened.machine.unique": 4,
    "opened.human.proxied": 1,
    "clicked.human.unique": 3,
    "clicked.bot.unique": 3,
    "clicked.bot.total": 5,
}


async def dashboard_shows_the_funnel(base: str) -> None:
    """The dashboard of the running tracker shows the same funnel; its screenshot is kept
    in $PIXELPOST_ARTIFACTS (default ./artifacts)."""
    async with Chromium(window=(1280, 1400)) as browser:
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard")
        await page.fill("input[name=token]", TOKEN)
        async with page.navigation():
            await page.click("button[type=submit]")
        state = await page.wait_for(
            "document.body.dataset.state !== 'loading' && document.body.dataset.state"
        )
        assert state == "ready", await page.evaluate("document.body.dataset.error")
        shown = await page.evaluate(SHOWN)
        for metric, expected in ON_THE_PAGE.items():
            assert int(re.sub(r"\D", "", shown[metric])) == expected, metric
        assert shown["rates.open"] == "25.0%"  # people's unique opens, 3 of 12 delivered
        assert shown["rates.click_to_open"] == "100.0%"
        links = await page.evaluate(
            "[...document.querySelectorAll('#links tr[data-link]')].map(r => r.dataset.link)"
        )
        assert links == [LINK_A, LINK_B]
        # Reputation: gone@example.org's hard bounce is 1 of 13 sent, past SES's 5 %.
        reputation = await page.evaluate(REPUTATION)
        assert reputation == {
            "newsletter": {
                "bounce.sent": "13",
                "bounce.permanent": "1",
                "bounce.rate": "7.69%",
                "bounce.status": "Warning",
                "complaint.delivered": "12",
                "complaint.complained": "0",
                "complaint.rate": "0.00%",
                "complaint.status": "Healthy",
            }
        }
        thresholds = await page.evaluate(
            "document.getElementById('reputation-thresholds').textContent"
        )
        assert "warning from 5%, at risk from 10%" in thresholds
        assert "warning from 0.1%, at risk from 0.5%" in thresholds
        path = Path(os.environ.get("PIXELPOST_ARTIFACTS") or ROOT / "artifacts") / SCREENSHOT
        await page.screenshot(path, full_page=True)
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert page.errors == []
