"""The tracker over real HTTP: the pixel, redirects, forged tokens, client addresses,
metrics; every hit in the real store."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from pixelpost.ids import new_message_id
from pixelpost.store import SQLiteStore
from pixelpost.tokens import TokenCodec
from tests.conftest import recorded
from tracker.app import create_app
from tracker.metrics import Metrics
from tracker.server import TrackerServer
from tracker.views import PIXEL, Views

codec = TokenCodec([os.urandom(32)])
TrackerStarter = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_tracker(store: SQLiteStore) -> AsyncIterator[TrackerStarter]:
    servers: list[TrackerServer] = []

    async def start(*, trusted: str = "127.0.0.1/32", anonymize_ip: bool = False) -> str:
        metrics = Metrics()
        views = Views(
            codec=codec,
            recorder=store,
            trusted_proxies=[ipaddress.ip_network(trusted)],
            anonymize_ip=anonymize_ip,
            metrics=metrics,
        )
        from pixelpost.config import HostPort  # noqa: PLC0415

        server = TrackerServer(
            app=create_app(views=views, metrics=metrics), listen=HostPort(host="127.0.0.1", port=0)
        )
        await server.start()
        servers.append(server)
        return f"http://{server.address}"

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


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
