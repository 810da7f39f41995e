"""The tracker over real HTTP: the pixel, redirects, forged tokens, client addresses,
metrics; every hit in the real store."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client import generate_latest

from pixelpost.config import ClassifyConfig, ClassifyRule
from pixelpost.core.event_types import EventType
from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import TokenCodec
from pixelpost.store import DestinationCounts, MessageRecord, SQLiteStore
from tests.clock import Clock
from tests.conftest import AppServer, recorded, until
from tracker.app import create_app
from tracker.auth import WRONG_TOKEN_DELAY, Access
from tracker.classifier import classifier_for
from tracker.metrics import Metrics
from tracker.views import PIXEL, Views

codec = TokenCodec([os.urandom(32)])
DEFAULT_CLASSIFY = ClassifyConfig()
TrackerStarter = Callable[..., Awaitable[str]]


DeliveryLookup = Callable[[str], Awaitable[tuple[float, bool] | None]]


@pytest.fixture
def start_tracker(store: SQLiteStore, serve_app: AppServer) -> TrackerStarter:
    async def start(
        *,
        trusted: str = "127.0.0.1/32",
        anonymize_ip: bool = False,
        classify: ClassifyConfig = DEFAULT_CLASSIFY,
        api_token: str | None = None,
        delivered_at: DeliveryLookup | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> str:
        metrics = metrics or Metrics()
        views = Views(
            codec=codec,
            recorder=store,
            trusted_proxies=[ipaddress.ip_network(trusted)],
            anonymize_ip=anonymize_ip,
            metrics=metrics,
            classifier=classifier_for(classify),
            delivered_at=delivered_at or store.delivered_at,
            clock=clock,
        )
        app = create_app(
            views=views, metrics=metrics, access=Access(api_token), stats=store, suppression=store
        )
        return await serve_app(app)

    return start


async def test_pixel_is_served_and_the_open_recorded(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = new_message_id()
    url = f"{base}/o/{codec.open_token(message_id)}"

    async with http.get(url, headers={"User-Agent": "Mail/1.0"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/gif"
        assert response.headers["Cache-Control"] == "no-store"
        assert await response.read() == PIXEL
    async with http.head(url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "43"

    events = recorded(store)
    assert [(kind, found) for kind, found, _ in events] == [("open", message_id)] * 2
    assert events[0][2]["userAgent"] == "Mail/1.0"
    assert events[0][2]["ipAddress"] == "127.0.0.1"


async def test_click_redirects_to_the_signed_destination(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = new_message_id()
    destination = "https://shop.example.com/a//b?x=1&y=%20z#top"
    token = codec.click_token(message_id, 4, destination, {"slot": ("hero",)})

    async with http.get(
        f"{base}/c/{token}?utm_added=by-someone", allow_redirects=False
    ) as response:
        assert response.status == 302
        assert response.headers["Location"] == destination
        assert response.headers["Cache-Control"] == "no-store"

    [(kind, found, detail)] = recorded(store)
    assert (kind, found) == ("click", message_id)
    assert detail["link"] == destination
    assert detail["linkTags"] == {"slot": ["hero"]}


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign key", "open as click"])
async def test_forged_or_damaged_tokens_get_404_and_never_a_redirect(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore, damage: str
) -> None:
    base = await start_tracker()
    message_id = new_message_id()
    token = codec.click_token(message_id, 0, "https://example.com/", {})
    bad = {
        "flip": token[:10] + ("A" if token[10] != "A" else "B") + token[11:],
        "truncate": token[:-3],
        "foreign key": TokenCodec([os.urandom(32)]).click_token(
            message_id, 0, "https://evil.example/", {}
        ),
        "open as click": codec.open_token(message_id) + "/evil.example/",
    }[damage]

    async with http.get(f"{base}/c/{bad}", allow_redirects=False) as response:
        assert response.status == 404
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "not valid" in await response.text()
    async with http.get(f"{base}/o/{bad.split('/')[0]}x") as response:
        assert response.status == 404
    async with http.get(f"{base}/c/https://evil.example/", allow_redirects=False) as response:
        assert response.status == 404
        assert "Location" not in response.headers
    assert recorded(store) == []


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    trusting = await start_tracker(trusted="127.0.0.1/32")
    suspicious = await start_tracker(trusted="10.0.0.0/8")
    anonymizing = await start_tracker(anonymize_ip=True)
    token = codec.open_token(new_message_id())
    headers = {"X-Forwarded-For": "198.51.100.23"}
    for base in (trusting, suspicious, anonymizing):
        async with http.get(f"{base}/o/{token}", headers=headers) as response:
            assert response.status == 200

    addresses = [detail["ipAddress"] for _, _, detail in recorded(store)]
    assert addresses == ["198.51.100.23", "127.0.0.1", "198.51.100.0"]


async def test_metrics_count_hits_and_latency(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_tracker()
    message_id = new_message_id()
    await (await http.get(f"{base}/o/{codec.open_token(message_id)}")).read()
    token = codec.click_token(message_id, 0, "https://example.com/", {})
    await (await http.get(f"{base}/c/{token}", allow_redirects=False)).read()
    await (await http.get(f"{base}/c/x{token}", allow_redirects=False)).read()

    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert "pixelpost_opens_total 1.0" in text
    assert "pixelpost_clicks_total 1.0" in text
    assert 'pixelpost_invalid_tokens_total{route="click"} 1.0' in text
    assert 'pixelpost_http_request_duration_seconds_count{route="pixel"} 1.0' in text
    # a refused token is answered too: its time counts
    assert 'pixelpost_http_request_duration_seconds_count{route="click"} 2.0' in text


class Counted:
    """The real store, counting the metrics' reads of it."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.reads = 0

    async def counts(self) -> dict[str, DestinationCounts]:
        return await self.store.counts()

    async def event_counts(self) -> dict[EventType, int]:
        self.reads += 1
        return await self.store.event_counts()


async def test_metrics_keep_refreshing_after_the_store_returns_something_odd(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.metrics")
    metrics = Metrics()
    base = await start_tracker(metrics=metrics)
    # A counter this version does not know (written by a newer one, or by hand).
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.execute("INSERT INTO counters (name, value) VALUES ('no such type', 1)")
    counted = Counted(store)
    refresher = asyncio.create_task(metrics.keep_refreshed(counted, interval=0.01))
    try:
        await until(lambda: counted.reads >= 5, "five refreshes")
        failures = [r for r in caplog.records if "refreshing the counts failed" in r.message]
        assert len(failures) == 1  # once for as long as it fails the same way
        assert "KeyError" in failures[0].message
        assert failures[0].exc_info is not None  # an unexpected error: where it came from

        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.execute("DELETE FROM counters WHERE name = 'no such type'")
        await (await http.get(f"{base}/o/{codec.open_token(new_message_id())}")).read()

        expected = 'pixelpost_events_recorded_total{type="Open"} 1.0'
        await until(lambda: expected in generate_latest(metrics.registry).decode(), "a refresh")
        async with http.get(f"{base}/metrics") as response:
            assert expected in await response.text()
        assert any("read from the store again" in r.message for r in caplog.records)
        assert not refresher.done()
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)


async def test_hits_are_answered_when_the_store_is_down(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    await store.close()  # the store is gone: writes fail
    token = codec.click_token(new_message_id(), 0, "https://example.com/", {})
    async with http.get(f"{base}/c/{token}", allow_redirects=False) as response:
        assert response.status == 302
    async with http.get(f"{base}/metrics") as response:
        assert "pixelpost_hits_unrecorded_total 1.0" in await response.text()


async def sent(store: SQLiteStore) -> str:
    """A copy the relay accepted just now, as the store records it; its message id."""
    message_id = new_message_id()
    record = MessageRecord(
        id=message_id, config_set="default", created_at=datetime.now(UTC), mail="{}"
    )
    await store.record(messages=[record])
    return message_id


CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


async def test_hits_are_classified_before_they_are_stored(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker(
        anonymize_ip=True,
        classify=ClassifyConfig(
            rules=(
                ClassifyRule(
                    reason="acme_gateway",
                    networks=(ipaddress.ip_network("203.0.113.0/28"),),
                ),
            )
        ),
    )
    message_id = await sent(store)
    pixel = f"{base}/o/{codec.open_token(message_id)}"
    link_a = f"{base}/c/{codec.click_token(message_id, 0, 'https://example.com/a', {})}"

    def via(ip: str, user_agent: str = CHROME) -> dict[str, str]:
        return {"X-Forwarded-For": ip, "User-Agent": user_agent}

    hits = [
        ("GET", pixel, via("198.51.100.7", "Mozilla/5.0")),  # Apple's prefetch
        ("GET", link_a, via("198.51.100.8")),  # seconds after delivery: a scanner
        ("GET", pixel, via("203.0.113.5")),  # the operator's own rule, on the full address
        ("GET", pixel, via("203.0.113.200")),  # outside it, though in the same /24
    ]
    for method, url, headers in hits:
        async with http.request(method, url, headers=headers, allow_redirects=False) as r:
            assert r.status in (200, 302)
    events = recorded(store)
    assert [(e[2]["machine"], e[2]["machineReason"]) for e in events if e[0] == "open"] == [
        (True, "apple_mpp"),
        (True, "acme_gateway"),
        (False, None),
    ]
    click = next(e[2] for e in events if e[0] == "click")
    assert (click["bot"], click["botReason"]) == (True, "click_after_delivery")
    # Classified on the full address, stored cut to its /24.
    assert {e[2]["ipAddress"] for e in events} == {"198.51.100.0", "203.0.113.0"}


async def test_clicks_after_the_window_are_people_unless_they_come_too_fast(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    clock = Clock()
    base = await start_tracker(clock=clock)
    message_id = await sent(store)
    clock.now += DEFAULT_CLASSIFY.click_after_delivery + 1  # past the window
    links = [
        f"{base}/c/{codec.click_token(message_id, n, f'https://example.com/{n}', {})}"
        for n in range(3)
    ]
    for url in links:  # one client, three links within a second
        async with http.get(url, headers={"User-Agent": CHROME}, allow_redirects=False) as r:
            assert r.status == 302
    async with http.head(links[0], headers={"User-Agent": CHROME}) as r:
        assert r.status == 302
    clicks = [(e[2]["bot"], e[2]["botReason"]) for e in recorded(store)]
    assert clicks == [
        (False, None),
        (True, "link_burst"),
        (True, "link_burst"),
        (True, "head_request"),
    ]


async def test_the_stats_api_wants_the_token_and_names_bad_parameters(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    off = await start_tracker()
    async with http.get(f"{off}/api/v1/stats") as r:
        assert r.status == 404
        assert "tracker.api_token" in (await r.json())["error"]

    base = await start_tracker(api_token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        started = asyncio.get_running_loop().time()
        async with http.get(f"{base}/api/v1/stats", headers=headers) as r:
            assert r.status == 401
            challenge = r.headers["WWW-Authenticate"]
            error = (await r.json())["error"]
        assert challenge.startswith('Bearer realm="pixelpost"')
        # No token asks for one; a wrong one says so (RFC 6750's invalid_token).
        assert ('error="invalid_token"' in challenge) == bool(headers)
        assert error.startswith("wrong token" if headers else "a bearer token is needed")
        if headers:  # a wrong token is answered slowly, to slow guessing down
            assert asyncio.get_running_loop().time() - started >= WRONG_TOKEN_DELAY * 0.9
    auth = {"Authorization": "Bearer s3cret-token"}
    async with http.get(f"{base}/api/v1/stats?by=week", headers=auth) as r:
        assert r.status == 400
        assert (await r.json())["error"].startswith("by: 'week' is not one of")

    message_id = await sent(store)
    pixel = f"{base}/o/{codec.open_token(message_id)}"
    for user_agent in ("Mozilla/5.0", CHROME, CHROME):
        async with http.get(pixel, headers={"User-Agent": user_agent}) as r:
            assert r.status == 200
    await store.rollup()
    async with http.get(
        f"{base}/api/v1/stats?config_set=default&by=hour&since=1h", headers=auth
    ) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        data = await r.json()
    assert data["config_set"] == "default"
    assert data["totals"]["opened"] == {
        "total": 3,
        "unique": 1,
        "human": {"total": 2, "unique": 1, "proxied": 0},
        "machine": {"total": 1, "unique": 1, "reasons": {"apple_mpp": 1}},
    }
    assert len(data["groups"]) == 1
    assert data["groups"][0]["opened"]["total"] == 3


async def test_a_failing_delivery_lookup_never_breaks_a_redirect(
    start_tracker: TrackerStarter, store: SQLiteStore, http: aiohttp.ClientSession
) -> None:
    async def broken(message_id: str) -> tuple[float, bool] | None:
        raise RuntimeError("the lookup broke")

    async def slow(message_id: str) -> tuple[float, bool] | None:
        await asyncio.sleep(5)
        return None

    for lookup in (broken, slow):
        base = await start_tracker(delivered_at=lookup)
        link = codec.click_token(new_message_id(), 0, "https://example.com/", {})
        started = asyncio.get_running_loop().time()
        async with http.get(
            f"{base}/c/{link}", headers={"User-Agent": CHROME}, allow_redirects=False
        ) as r:
            assert r.status == 302
        assert asyncio.get_running_loop().time() - started < 1.0
    clicks = [e[2] for e in recorded(store)]
    assert [(c["bot"], c["botReason"]) for c in clicks] == [(False, None), (False, None)]


async def test_a_cookie_of_any_text_is_refused_not_an_error(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_tracker(api_token="s3cret-token-0123456789")
    for value in ("1.\u00e9\u00e9", "\u00b2.abc", "99999999999.abc", "x.y", ""):
        async with http.get(
            f"{base}/api/v1/stats", headers={"Cookie": f"pixelpost_session={value}"}
        ) as r:
            assert r.status == 401
