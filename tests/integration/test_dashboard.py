"""The dashboard over real HTTP, with the statistics API and the real SQLite store:
the login form, the session cookie, the static files and the security headers; then
the page itself in headless Chromium, its numbers against the API's."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from pixelpost.core.event_types import EventType
from pixelpost.core.events import (
    Event,
    bounce_event,
    click_event,
    delivery_delay_event,
    delivery_event,
    dumps,
    open_event,
    send_event,
)
from pixelpost.core.ids import new_event_id
from pixelpost.core.throttle import FAILURE_WINDOW, Throttle
from pixelpost.store import MessageRecord, SQLiteStore
from tests.browser import Chromium
from tests.conftest import AppServer
from tests.contract.campaign import subscription
from tracker.api import add_api
from tracker.auth import COOKIE, SESSION_SECONDS, WRONG_TOKEN_DELAY, Access
from tracker.dashboard import LOGIN_BODY_LIMIT, add_dashboard

TOKEN = "dashboard-test-token-5f0c2a"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'"
)
REPO = Path(__file__).resolve().parent.parent.parent
SCREENSHOT = "dashboard-integration.png"
HOSTILE_LINK = 'https://shop.example/sale?q="><img src=x id=injected>'
"""A link whose URL is markup: the dashboard must show it as text."""

DashboardStarter = Callable[..., Awaitable[str]]


@pytest.fixture
def start_dashboard(store: SQLiteStore, serve_app: AppServer) -> DashboardStarter:
    """Starts trackers on 127.0.0.1 port 0 with the statistics API and the dashboard,
    for the API token given (None: both off), believing X-Forwarded-* from
    `trusted_proxies`; returns the base URL."""

    async def start(
        token: str | None, *, trusted_proxies: Sequence[str] = (), throttle: Throttle | None = None
    ) -> str:
        access = Access(
            token,
            trusted_proxies=[ipaddress.ip_network(network) for network in trusted_proxies],
            throttle=throttle,
        )
        app = web.Application()
        add_api(app, access=access, stats=store)
        add_dashboard(app, access)
        return await serve_app(app)

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each test sends the cookies it means to.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _message(message_id: str, config_set: str, tags: dict[str, list[str]]) -> MessageRecord:
    mail = {"messageId": message_id, "tags": {"ses:configuration-set": [config_set], **tags}}
    return MessageRecord(
        id=message_id,
        config_set=config_set,
        created_at=datetime.now(UTC) - timedelta(days=3),
        mail=json.dumps(mail),
    )


async def seed(store: SQLiteStore) -> None:
    """Eight copies over the last three days: sent 8, delivered 7, one bounce; people
    open m1 (twice), m2 (through Gmail's proxy) and m4, machines m3, m4 and m5; people
    click in m1 (twice), m2 and m6 (never opened: engaged all the same), bots in m3 and
    m4; m2's recipient complains; m5's unsubscribes with the header, m6's with the link,
    subscribes again and unsubscribes again."""
    now = datetime.now(UTC)
    days_ago = now - timedelta(days=3)
    spring = {"campaign": ["spring"]}
    messages = [_message(f"m{n}", "marketing", spring) for n in range(1, 7)] + [
        _message(f"m{n}", "transactional", {"kind": ["receipt"]}) for n in (7, 8)
    ]

    def opened(
        message_id: str, at: datetime, *, reason: str | None = None, proxy: str | None = None
    ) -> Event:
        extra = {"machine": reason is not None, "machineReason": reason, "proxy": proxy}
        ua = "Mozilla/5.0" if reason == "apple_mpp" else "Mozilla/5.0 (X11) Thunderbird/128"
        return open_event(message_id, ip="192.0.2.7", user_agent=ua, now=at, extra=extra)

    def clicked(message_id: str, link: str, at: datetime, *, reason: str | None = None) -> Event:
        return click_event(
            message_id,
            ip="192.0.2.8",
            user_agent="Mozilla/5.0 (X11) Firefox/130",
            link=link,
            link_tags={},
            now=at,
            extra={"bot": reason is not None, "botReason": reason},
        )

    events = [send_event(m.id, now=days_ago) for m in messages]
    events += [
        delivery_event(
            f"m{n}",
            recipients=[f"r{n}@example.org"],
            smtp_response="250 2.0.0 OK",
            processing_ms=120,
            reporting_mta="relay.test",
            now=days_ago + timedelta(seconds=2),
        )
        for n in range(1, 8)
    ]
    events += [
        delivery_delay_event(
            "m7",
            delay_type="TransientCommunicationFailure",
            recipients=[("r7@example.org", "4.4.1", "smtp; 421 try later")],
            expiration=now + timedelta(days=1),
            reporting_mta="relay.test",
            now=days_ago + timedelta(seconds=1),
        ),
        bounce_event(
            "m8",
            bounce_type="Permanent",
            bounce_subtype="General",
            recipients=[("r8@example.org", "5.1.1", "smtp; 550 5.1.1 no such user")],
            reporting_mta="relay.test",
            now=days_ago + timedelta(seconds=2),
        ),
        opened("m3", days_ago + timedelta(seconds=5), reason="apple_mpp"),
        opened("m4", days_ago + timedelta(seconds=6), reason="apple_mpp"),
        opened("m5", days_ago + timedelta(minutes=1), reason="head_request"),
        clicked(
            "m4",
            "https://shop.example/",
            days_ago + timedelta(seconds=4),
            reason="click_after_delivery",
        ),
        clicked("m3", HOSTILE_LINK, days_ago + timedelta(seconds=8), reason="security_scanner"),
        opened("m1", now - timedelta(days=2)),
        opened("m2", now - timedelta(days=2), proxy="gmail"),
        clicked("m1", "https://shop.example/", now - timedelta(days=2)),
        opened("m1", now - timedelta(days=1)),
        clicked("m1", "https://shop.example/", now - timedelta(days=1)),
        opened("m4", now - timedelta(hours=3)),
        clicked("m2", "https://shop.example/help", now - timedelta(hours=3)),
        clicked("m6", "https://shop.example/", now - timedelta(hours=1)),
        subscription("m5", (now - timedelta(hours=2)).timestamp(), source="UnsubscribeHeader"),
        subscription("m6", (now - timedelta(minutes=50)).timestamp()),
        subscription("m6", (now - timedelta(minutes=40)).timestamp(), unsubscribe=False),
        subscription("m6", (now - timedelta(minutes=30)).timestamp()),
        Event(
            id=new_event_id(),
            type=EventType.COMPLAINT,
            message_id="m2",
            created_at=now - timedelta(hours=2),
            detail=dumps({"complainedRecipients": [{"emailAddress": "r2@example.org"}]}),
        ),
    ]
    await store.record(messages=messages, events=events)
    while await store.rollup():
        pass


EXPECTED = {
    "sent": 8,
    "delivered": 7,
    "opened.human.unique": 3,
    "opened.machine.unique": 3,
    "clicked.human.unique": 3,
    "clicked.bot.unique": 2,
    "engaged": 4,
    "unsubscribed.unique": 2,
    "unsubscribed.total": 3,
    "unsubscribed.UnsubscribeHeader": 1,
    "unsubscribed.UnsubscribeLink": 2,
    "unsubscribed.UnsubscribeMailto": 0,
    "resubscribed": 1,
    "opened.total": 7,
    "opened.machine.total": 3,
    "opened.human.proxied": 1,
    "clicked.total": 6,
    "clicked.bot.total": 2,
    "bounced.total": 1,
    "bounced.Permanent": 1,
    "delayed": 1,
}
"""What `seed` adds up to, for all mail over the last 30 days."""


def lookup(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for key in path.split("."):
        value = value[key]
    return value


def assert_protected(response: aiohttp.ClientResponse, *, cache: str = "no-store") -> None:
    """The headers every dashboard response carries."""
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == cache


def session_cookie(response: aiohttp.ClientResponse) -> tuple[str, str]:
    """The session cookie a response sets: (value, the whole Set-Cookie line)."""
    [line] = [v for v in response.headers.getall("Set-Cookie", []) if v.startswith(COOKIE)]
    cookie = SimpleCookie(line)
    return cookie[COOKIE].value, line


async def login(http: aiohttp.ClientSession, base: str, token: str, **headers: str) -> str:
    """Signs in through the form; returns the session cookie's value."""
    async with http.post(
        f"{base}/dashboard/login", data={"token": token}, headers=headers, allow_redirects=False
    ) as response:
        assert response.status == 303
        value, _ = session_cookie(response)
        return value


async def test_without_a_session_the_dashboard_is_the_login_form(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    async with http.get(f"{base}/dashboard") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert_protected(response)
        page = await response.text()
    assert '<form method="post" action="/dashboard/login">' in page
    assert re.search(r'<input[^>]* name="token" type="password"', page)
    assert "dashboard.js" not in page
    assert "<script" not in page
    assert "style=" not in page


async def test_a_wrong_token_gets_401_the_form_again_and_no_cookie(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)

    async def attempt(form: dict[str, str]) -> None:
        started = time.monotonic()
        async with http.post(
            f"{base}/dashboard/login", data=form, allow_redirects=False
        ) as response:
            assert response.status == 401
            assert "Set-Cookie" not in response.headers
            assert_protected(response)
            page = await response.text()
        assert time.monotonic() - started >= WRONG_TOKEN_DELAY * 0.9
        assert "wrong token" in page
        assert 'action="/dashboard/login"' in page

    forms: list[dict[str, str]] = [
        {"token": "guess"},
        {"token": TOKEN + "x"},
        {},
        {"token": ""},
        {f"f{n}": "" for n in range(20)} | {"token": TOKEN},  # more fields than a form has
    ]
    await asyncio.gather(*(attempt(form) for form in forms))


async def test_the_right_token_sets_the_session_cookie_and_the_page_loads(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    async with http.post(
        f"{base}/dashboard/login", data={"token": TOKEN}, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard"
        assert_protected(response)
        value, line = session_cookie(response)
    attributes = {part.strip().split("=", 1)[0].lower(): part for part in line.split(";")}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes.keys()
    assert attributes["path"].strip() == "Path=/"
    assert attributes["max-age"].strip() == f"Max-Age={SESSION_SECONDS}"
    assert attributes["samesite"].strip() == "SameSite=Strict"
    assert "secure" not in attributes  # plain http, and no proxy said https
    assert TOKEN not in line
    assert not Access(TOKEN).session_valid(value)  # sessions live where they were made

    async with http.get(f"{base}/dashboard", headers={"Cookie": f"{COOKIE}={value}"}) as response:
        assert response.status == 200
        assert_protected(response)
        page = await response.text()
    assert '<script src="/dashboard/static/dashboard.js" defer></script>' in page
    assert 'action="/dashboard/logout"' in page

    # A bearer token opens the page too, and a forged cookie does not.
    async with http.get(
        f"{base}/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert "dashboard.js" in await response.text()
    forged = f"{int(time.time()) + 3600}.{'0' * 64}"
    async with http.get(f"{base}/dashboard", headers={"Cookie": f"{COOKIE}={forged}"}) as response:
        assert 'action="/dashboard/login"' in await response.text()


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    behind_proxy = await start_dashboard(TOKEN, trusted_proxies=["127.0.0.1/32"])
    exposed = await start_dashboard(TOKEN, trusted_proxies=["10.0.0.0/8"])
    secure = []
    for base in (behind_proxy, exposed):
        async with http.post(
            f"{base}/dashboard/login",
            data={"token": TOKEN},
            headers={"X-Forwarded-Proto": "https"},
            allow_redirects=False,
        ) as response:
            _, line = session_cookie(response)
        secure.append("secure" in [part.strip().lower() for part in line.split(";")])
    # Anyone else's X-Forwarded-Proto is only a claim: the cookie is not made Secure
    # on its word (nor is anything else believed).
    assert secure == [True, False]


async def test_logout_clears_the_cookie(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    value = await login(http, base, TOKEN)
    async with http.post(
        f"{base}/dashboard/logout",
        headers={"Cookie": f"{COOKIE}={value}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard"
        assert_protected(response)
        cleared, line = session_cookie(response)
    assert cleared == ""
    assert "Max-Age=0" in line
    assert "Path=/" in line


async def signed_in(http: aiohttp.ClientSession, base: str, cookie: str) -> bool:
    """Whether `cookie` opens the statistics API and the dashboard's page."""
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    async with http.get(f"{base}/api/v1/stats", headers=headers) as response:
        api = response.status == 200
    async with http.get(f"{base}/dashboard", headers=headers) as response:
        page = "dashboard.js" in await response.text()
    assert api == page
    return api


async def logout(http: aiohttp.ClientSession, base: str, cookie: str) -> None:
    async with http.post(
        f"{base}/dashboard/logout",
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303


async def test_a_session_ends_when_it_signs_out(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    cookie = await login(http, base, TOKEN)
    other = await login(http, base, TOKEN)
    assert await signed_in(http, base, cookie)

    await logout(http, base, cookie)
    # A copy of the cookie kept past the sign-out (a shared computer, a stolen
    # cookie) opens nothing any more; another session is left alone.
    assert not await signed_in(http, base, cookie)
    assert await signed_in(http, base, other)


async def test_each_sign_in_gets_a_session_of_its_own(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    # Within the same second, as two browsers signing in together would.
    first, second = await asyncio.gather(login(http, base, TOKEN), login(http, base, TOKEN))
    assert first != second
    assert first.split(".")[0] == second.split(".")[0]  # same expiry: only the id differs

    await logout(http, base, first)
    assert not await signed_in(http, base, first)
    assert await signed_in(http, base, second)


async def test_parallel_wrong_tokens_are_all_counted_per_address(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN, trusted_proxies=["127.0.0.1/32"])
    login_url = f"{base}/dashboard/login"
    guess = "guess-guess-guess-guess"

    async def attempt(kind: str) -> tuple[int, str | None]:
        bearer = {"Authorization": f"Bearer {guess}"}
        if kind == "login":
            request = http.post(login_url, data={"token": guess}, allow_redirects=False)
        elif kind == "api":
            request = http.get(f"{base}/api/v1/stats", headers=bearer)
        else:
            request = http.get(f"{base}/dashboard", headers=bearer)
        async with request as response:
            await response.read()
            return response.status, response.headers.get("Retry-After")

    # Every way of presenting a token counts, and attempts waiting for their (slow)
    # answer count too: of eight guesses at once, five are checked.
    kinds = ["login", "api", "page"] * 2 + ["login", "api"]
    answers = await asyncio.gather(*(attempt(kind) for kind in kinds))
    assert sorted(status for status, _ in answers) == [401] * 5 + [429] * 3
    assert {after for status, after in answers if status == 429} == {"1"}

    # Five failures: this address is refused, unchecked, even the right token, until
    # they age out; another address behind the proxy is not.
    async with http.post(login_url, data={"token": TOKEN}, allow_redirects=False) as response:
        assert response.status == 429
        assert "Set-Cookie" not in response.headers
        assert 0 < int(response.headers["Retry-After"]) <= FAILURE_WINDOW
        assert "Too many wrong tokens" in await response.text()
    async with http.get(
        f"{base}/api/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 429
        assert "too many wrong tokens" in (await response.json())["error"]
    await login(http, base, TOKEN, **{"X-Forwarded-For": "198.51.100.7"})


async def test_wrong_tokens_from_every_address_together_are_bounded(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(
        TOKEN, trusted_proxies=["127.0.0.1/32"], throttle=Throttle(per_client=5, in_all=6)
    )

    async def attempt(client: str, token: str) -> int:
        async with http.post(
            f"{base}/dashboard/login",
            data={"token": token},
            headers={"X-Forwarded-For": client},
            allow_redirects=False,
        ) as response:
            return response.status

    clients = [f"198.51.100.{n}" for n in (1, 2, 3)] * 2
    assert await asyncio.gather(*(attempt(c, "guess") for c in clients)) == [401] * 6
    # Two failures each, but six in all: a seventh address is refused unchecked.
    assert await attempt("203.0.113.9", TOKEN) == 429


async def test_forms_posted_from_another_site_are_refused(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    for path in ("login", "logout"):
        async with http.post(
            f"{base}/dashboard/{path}",
            data={"token": TOKEN},
            headers={"Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
        ) as response:
            assert response.status == 403
            assert "Set-Cookie" not in response.headers


async def test_a_login_body_is_bounded(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    padding = "x" * LOGIN_BODY_LIMIT
    async with http.post(
        f"{base}/dashboard/login", data={"token": TOKEN, "pad": padding}, allow_redirects=False
    ) as response:
        assert response.status == 413
        assert "Set-Cookie" not in response.headers

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to go by
        yield f"token={TOKEN}&pad=".encode()
        for _ in range(8):
            yield b"x" * 1024

    async with http.post(
        f"{base}/dashboard/login",
        data=chunked(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    ) as response:
        assert response.status == 413


async def test_static_files_come_from_a_fixed_list(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(TOKEN)
    for name, content_type in (
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        async with http.get(f"{base}/dashboard/static/{name}") as response:
            assert response.status == 200, name
            assert response.content_type == content_type
            assert_protected(response, cache="no-cache")
            assert len(await response.read()) > 200
            etag = response.headers["ETag"]
        async with http.get(
            f"{base}/dashboard/static/{name}", headers={"If-None-Match": etag}
        ) as response:
            assert response.status == 304

    for path in (
        "/dashboard/static/dashboard.html",  # in the folder, not on the list
        "/dashboard/static/nothing.js",
        "/dashboard/static/..%2Fauth.py",
        "/dashboard/static/..%2F..%2Fpixelpost%2F__init__.py",
        "/dashboard/static/../auth.py",
        "/dashboard/static/..",
        "/dashboard/static/%2e%2e",
    ):
        async with http.get(URL(base + path, encoded=True)) as response:
            assert response.status == 404, path
            assert b"import" not in await response.read()


async def test_the_dashboard_is_off_without_a_token(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_dashboard(None)
    async with http.get(f"{base}/dashboard") as response:
        assert response.status == 404
        assert response.content_type == "text/plain"
        assert "tracker.api_token" in await response.text()
        assert_protected(response)
    async with http.post(f"{base}/dashboard/login", data={"token": ""}) as response:
        assert response.status == 404
        assert "Set-Cookie" not in response.headers
    async with http.get(f"{base}/dashboard/static/dashboard.js") as response:
        assert response.status == 404


async def test_the_stats_api_takes_the_bearer_token_or_the_session_cookie(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    await seed(store)
    base = await start_dashboard(TOKEN)
    url = f"{base}/api/v1/stats?since=30d"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Cookie": f"{COOKIE}=1.abc"}):
        async with http.get(url, headers=headers) as response:
            assert response.status == 401
            assert "error" in await response.json()

    async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 200
        by_token = await response.json()
    cookie = await login(http, base, TOKEN)
    async with http.get(url, headers={"Cookie": f"{COOKIE}={cookie}"}) as response:
        assert response.status == 200
        by_cookie = await response.json()
    for metric, expected in EXPECTED.items():
        assert lookup(by_token["totals"], metric) == expected, metric
    assert by_cookie["totals"] == by_token["totals"]


async def test_the_stats_api_adds_engaged_and_unsubscribes_to_every_group(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    await seed(store)
    base = await start_dashboard(TOKEN)

    async def api(query: str) -> dict[str, Any]:
        async with http.get(
            f"{base}/api/v1/stats?since=30d&{query}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200
            data: dict[str, Any] = await response.json()
            return data

    sets, links, tags, days = [
        await api(f"by={by}") for by in ("config_set", "link", "tag", "day")
    ]
    # Every field there was, and the three new ones.
    assert set(sets["totals"]) == {
        *("sent", "delivered", "delayed", "rejected", "rendering_failures", "complained"),
        *("suppressed", "bounced", "opened", "clicked", "rates"),
        *("engaged", "unsubscribed", "resubscribed"),
    }
    assert list(sets["totals"]["rates"]) == [
        *("delivery", "open", "click", "click_to_open", "machine_open_share"),
        *("bot_click_share", "engagement", "unsubscribe"),
    ]
    marketing, transactional = sets["groups"]
    assert marketing["key"] == "marketing"
    assert (marketing["engaged"], marketing["resubscribed"]) == (4, 1)
    assert marketing["unsubscribed"] == {
        "total": 3,
        "unique": 2,
        "UnsubscribeHeader": 1,
        "UnsubscribeLink": 2,
        "UnsubscribeMailto": 0,
    }
    assert marketing["rates"]["engagement"] == round(4 / 6, 4)
    assert marketing["rates"]["unsubscribe"] == round(2 / 6, 4)
    assert (transactional["engaged"], transactional["unsubscribed"]["total"]) == (0, 0)
    assert transactional["rates"]["engagement"] == 0.0  # one delivered, none engaged

    # Per link, as unique opens: nothing (a copy is engaged, not a link).
    assert {g["key"]: g["engaged"] for g in links["groups"]} == {
        "https://shop.example/": 0,
        "https://shop.example/help": 0,
        HOSTILE_LINK: 0,
    }
    assert links["totals"]["engaged"] == 4
    assert {g["key"]: g["engaged"] for g in tags["groups"]} == {
        "campaign:spring": 4,
        "kind:receipt": 0,
    }
    assert sum(g["engaged"] for g in days["groups"]) == 4
    assert sum(g["unsubscribed"]["unique"] for g in days["groups"]) == 2


def artifacts() -> Path:
    return Path(os.environ.get("PIXELPOST_ARTIFACTS") or REPO / "artifacts")


def digits(text: str) -> int:
    """A number as the page prints it ("1,234")."""
    return int(re.sub(r"\D", "", text))


def percent(rate: float | None) -> str:
    return "\u2013" if rate is None else f"{rate * 100:.1f}%"


SHOWN = (
    "Object.fromEntries([...document.querySelectorAll('[data-metric]')]"
    ".map(n => [n.dataset.metric, n.textContent]))"
)
STATE = "document.body.dataset.state !== 'loading' && document.body.dataset.state"
REPUTATION = (
    "Object.fromEntries([...document.querySelectorAll('#reputation tr')]"
    ".filter(row => row.querySelector('[data-field]'))"
    ".map(row => ['configSet' in row.dataset ? row.dataset.configSet : 'total',"
    " Object.fromEntries([...row.querySelectorAll('[data-field]')]"
    ".map(n => [n.dataset.field, n.textContent]))]))"
)
"""The reputation panel's rows, by configuration set (and 'total'): each figure as shown."""


def reputation_shown(figures: dict[str, Any]) -> dict[str, str]:
    """How the panel shows one set's figures from the reputation API."""
    bounce, complaint = figures["bounce"], figures["complaint"]
    words = {"healthy": "Healthy", "warning": "Warning", "at_risk": "At risk"}

    def fine(rate: float | None) -> str:
        return "\u2013" if rate is None else f"{rate * 100:.2f}%"

    return {
        "bounce.sent": str(bounce["sent"]),
        "bounce.permanent": str(bounce["permanent"]),
        "bounce.rate": fine(bounce["rate"]),
        "bounce.status": words[bounce["status"]],
        "complaint.delivered": str(complaint["delivered"]),
        "complaint.complained": str(complaint["complained"]),
        "complaint.rate": fine(complaint["rate"]),
        "complaint.status": words[complaint["status"]],
    }


async def test_the_dashboard_in_chromium(
    start_dashboard: DashboardStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    await seed(store)
    base = await start_dashboard(TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def api(query: str) -> dict[str, Any]:
        async with http.get(f"{base}/api/v1/stats?{query}", headers=bearer) as response:
            assert response.status == 200
            data: dict[str, Any] = await response.json()
            return data

    async with Chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard")
        assert await page.evaluate("document.title") == "Sign in · pixelpost"
        await page.fill("input[name=token]", TOKEN)
        async with page.navigation():
            await page.click("button[type=submit]")
        assert await page.wait_for(STATE) == "ready", await page.evaluate(
            "document.body.dataset.error"
        )
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: not for scripts

        query = await page.evaluate("document.body.dataset.query")
        assert query == "since=30d"
        data = await api(f"{query}&by=day")
        totals = data["totals"]
        shown = await page.evaluate(SHOWN)
        for metric, expected in EXPECTED.items():
            assert digits(shown[metric]) == lookup(totals, metric) == expected, metric
        for name, rate in totals["rates"].items():
            assert shown[f"rates.{name}"] == percent(rate), name
        assert shown["rates.open"] == "42.9%"  # 3 of 7 delivered, people only
        assert shown["rates.engagement"] == "57.1%"  # 4 of 7: m6 was clicked, not opened
        assert shown["rates.unsubscribe"] == "28.6%"  # m5 and m6, of 7
        funnel_rows = await page.evaluate(
            "[...document.querySelectorAll('#funnel text.label')].map(n => n.textContent)"
        )
        assert funnel_rows == ["Sent", "Delivered", "Opened", "Clicked", "Engaged", "Unsubscribed"]

        links = await api(f"{query}&by=link")
        rows = await page.evaluate(
            "[...document.querySelectorAll('#links tr[data-link]')].map(row =>"
            " [row.dataset.link, row.querySelector('.url').textContent,"
            " row.querySelector('[data-field=\"human.unique\"]').textContent])"
        )
        assert rows == [
            [g["key"], g["key"], str(g["clicked"]["human"]["unique"])] for g in links["groups"]
        ]
        assert rows[0][0] == "https://shop.example/"
        assert HOSTILE_LINK in [row[0] for row in rows]
        assert await page.evaluate("document.getElementById('injected')") is None

        reasons = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#open-reasons [data-reason],"
            " #click-reasons [data-reason]')].map(n => [n.dataset.reason,"
            " Number(n.querySelector('.count').dataset.value)]))"
        )
        assert reasons == {
            **totals["opened"]["machine"]["reasons"],
            **totals["clicked"]["bot"]["reasons"],
        }
        assert reasons["apple_mpp"] == 2
        bars = await page.evaluate(
            "[...document.querySelectorAll('#opens-chart g[data-key]')].map(g =>"
            " [g.dataset.key, Number(g.dataset.human), Number(g.dataset.other)])"
        )
        assert bars == [
            [g["key"], g["opened"]["human"]["total"], g["opened"]["machine"]["total"]]
            for g in data["groups"]
            if g["opened"]["total"]
        ]
        choices = await page.evaluate(
            "[...document.querySelectorAll('#filter-config-set option')].map(o => o.value)"
        )
        assert choices == ["", "marketing", "transactional"]

        # Reputation: each set's rates and statuses in words, all mail's, the thresholds.
        async with http.get(f"{base}/api/v1/reputation", headers=bearer) as response:
            assert response.status == 200
            standing = await response.json()
        panel = await page.evaluate(REPUTATION)
        assert panel == {
            **{entry["config_set"]: reputation_shown(entry) for entry in standing["config_sets"]},
            "total": reputation_shown(standing["total"]),
        }
        assert {name: row["bounce.rate"] for name, row in panel.items()} == {
            "marketing": "0.00%",
            "transactional": "50.00%",  # m8's hard bounce, of 2 sent
            "total": "12.50%",
        }
        assert {name: row["bounce.status"] for name, row in panel.items()} == {
            "marketing": "Healthy",
            "transactional": "At risk",
            "total": "At risk",
        }
        assert panel["marketing"]["complaint.rate"] == "16.67%"  # 1 of 6 delivered
        assert panel["marketing"]["complaint.status"] == "At risk"
        assert panel["transactional"]["complaint.rate"] == "0.00%"
        thresholds = await page.evaluate(
            "document.getElementById('reputation-thresholds').textContent"
        )
        assert "warning from 5%, at risk from 10%" in thresholds
        assert "warning from 0.1%, at risk from 0.5%" in thresholds
        assert "last 7d" in await page.evaluate(
            "document.getElementById('reputation-window').textContent"
        )

        path = artifacts() / SCREENSHOT
        await page.screenshot(path, full_page=True)
        png = path.read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 10_000

        # A filter changes what is fetched and shown.
        await page.evaluate(
            "(() => { const s = document.getElementById('filter-config-set');"
            " s.value = 'transactional'; s.dispatchEvent(new Event('change')); })()"
        )
        await page.wait_for(
            "document.body.dataset.query === 'config_set=transactional&since=30d'"
            " && document.body.dataset.state === 'ready'"
        )
        narrowed = (await api("config_set=transactional&since=30d"))["totals"]
        shown = await page.evaluate(SHOWN)
        assert digits(shown["sent"]) == narrowed["sent"] == 2
        assert digits(shown["delivered"]) == narrowed["delivered"] == 1
        assert digits(shown["bounced.Permanent"]) == narrowed["bounced"]["Permanent"] == 1
        narrowed_panel = await page.evaluate(REPUTATION)
        assert list(narrowed_panel) == ["transactional"]
        assert narrowed_panel["transactional"]["bounce.status"] == "At risk"

        assert page.errors == []  # no script errors, failed loads or CSP violations
