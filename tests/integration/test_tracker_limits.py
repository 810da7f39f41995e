"""What any client meets at the tracker's door, over real sockets: a deadline for a
request's headers, a bound on connections per address and in all, and a short 4xx with
one log line, never a traceback, for a request that does not parse."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from pixelpost.core.tokens import TokenCodec
from pixelpost.store import SQLiteStore
from tests.conftest import AppServer
from tracker.app import create_app
from tracker.auth import Access
from tracker.metrics import Metrics
from tracker.views import Views

codec = TokenCodec([os.urandom(32)])
TOKEN = "limits-test-token-0123456789"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
TrackerStarter = Callable[..., Awaitable[str]]
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t.example\r\n\r\n"


@pytest.fixture
def start_tracker(store: SQLiteStore, serve_app: AppServer) -> TrackerStarter:
    """Starts the whole tracker application with the `[tracker]` settings given."""

    async def start(**settings: Any) -> str:
        metrics = Metrics()
        views = Views(
            codec=codec,
            recorder=store,
            trusted_proxies=settings.get("trusted_proxies", ()),
            anonymize_ip=False,
            metrics=metrics,
        )
        app = create_app(
            views=views, metrics=metrics, access=Access(TOKEN), stats=store, suppression=store
        )
        return await serve_app(app, **settings)

    return start


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[Streams]]]:
    """Opens raw TCP connections to a tracker's base URL; closed after the test."""
    writers: list[asyncio.StreamWriter] = []

    async def open_connection(base: str) -> Streams:
        url = urlsplit(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writers.append(writer)
        return reader, writer

    yield open_connection
    for writer in writers:
        writer.close()


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP response: its status and its body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def closed_after(reader: asyncio.StreamReader) -> float:
    """Seconds until the tracker closes the connection (reading what it sends)."""
    started = asyncio.get_running_loop().time()
    while await asyncio.wait_for(reader.read(65536), 10):
        pass
    return asyncio.get_running_loop().time() - started


async def test_a_request_whose_headers_never_end_is_cut_off(
    start_tracker: TrackerStarter, connect: Callable[[str], Awaitable[Streams]]
) -> None:
    base = await start_tracker(header_timeout=0.3)
    reader, writer = await connect(base)
    writer.write(b"GET /o/abc HT")  # and nothing more
    assert 0.25 <= await closed_after(reader) < 3

    # Headers trickling in, a byte at a time, do not push the deadline back.
    reader, writer = await connect(base)

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"x" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    trickling = asyncio.create_task(trickle())
    try:
        assert await closed_after(reader) < 3
    finally:
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)

    # A client that asks in time is answered, and its idle connection closed as late.
    reader, writer = await connect(base)
    writer.write(HEALTHZ)
    assert (await response(reader))[0] == 200
    assert 0.25 <= await closed_after(reader) < 3


async def test_connections_past_the_limit_for_one_address_are_refused(
    start_tracker: TrackerStarter, connect: Callable[[str], Awaitable[Streams]]
) -> None:
    base = await start_tracker(max_connections_per_ip=2)
    held = [await connect(base) for _ in range(2)]
    for reader, writer in held:  # admitted, and kept alive
        writer.write(HEALTHZ)
        assert (await response(reader))[0] == 200

    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as refused:
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        assert "too many connections from your address" in await refused.text()

    for reader, writer in held:  # the admitted ones are untouched
        writer.write(HEALTHZ)
        assert (await response(reader))[0] == 200

    held[0][1].close()  # one goes: another may come
    async with aiohttp.ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with http.get(f"{base}/healthz") as answer:
                if answer.status == 200:
                    break
            assert asyncio.get_running_loop().time() < deadline, "the slot never came back"


async def test_a_trusted_proxy_counts_in_the_total_only(
    start_tracker: TrackerStarter, connect: Callable[[str], Awaitable[Streams]]
) -> None:
    # Behind nginx every recipient comes from the proxy's address.
    base = await start_tracker(
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        max_connections_per_ip=1,
        max_connections=3,
    )
    for _ in range(3):
        reader, writer = await connect(base)
        writer.write(HEALTHZ)
        assert (await response(reader))[0] == 200

    reader, writer = await connect(base)
    writer.write(HEALTHZ)
    status, body = await response(reader)
    assert status == 503
    assert b"too many connections;" in body
    assert await closed_after(reader) < 3


HOSTILE = {
    "bad percent-encoding in a pixel token": (b"GET /o/%ZZ HTTP/1.1\r\nHost: t\r\n\r\n", False),
    "bad percent-encoding in a link token": (
        b"GET /c/%ZZ%C3%28/https://x HTTP/1.1\r\nHost: t\r\n\r\n",
        False,
    ),
    "a request target that is no URL": (b"GET http://[ HTTP/1.1\r\nHost: t\r\n\r\n", True),
    "an asterisk target for GET": (b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", True),
    "an absurdly long path": (b"GET /o/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", True),
    "a NUL byte in the path": (b"GET /o/a\x00b HTTP/1.1\r\nHost: t\r\n\r\n", True),
    "a NUL byte in a header": (b"GET /o/ab HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", True),
    "an unknown HTTP version": (b"GET /o/abc HTTP/9.9\r\nHost: t\r\n\r\n", True),
    "a negative Content-Length": (
        b"GET /o/abc HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        True,
    ),
    "a broken chunked body": (
        b"GET /o/abc HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        True,
    ),
    "not HTTP at all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 HTTP/1.1\r\n\r\n", True),
    "a Host that is no host": (b"GET /o/abc HTTP/1.1\r\nHost: [\r\n\r\n", False),
    "a Host with a space": (b"GET /c/abc HTTP/1.1\r\nHost: a b\r\n\r\n", False),
    "a Host that is not UTF-8": (b"GET /o/abc HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", False),
    "a sign-in with a bad Host and a proxy's word": (
        b"POST /dashboard/login HTTP/1.1\r\nHost: [::1\r\nX-Forwarded-Proto: \xff\r\n"
        b"X-Forwarded-For: \xfe, [\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 9\r\n\r\ntoken=%ZZ",
        False,
    ),
    "statistics asked with bad percent-encoding": (
        b"GET /api/v1/stats?since=%ZZ&by=%C3%28 HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
        False,
    ),
    "a cookie that is not text": (
        b"GET /dashboard HTTP/1.1\r\nHost: t\r\nCookie: \xff=\xfe; pixelpost_session=\x01\r\n\r\n",
        True,
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_input_gets_a_4xx_and_one_line_never_a_traceback(
    start_tracker: TrackerStarter,
    connect: Callable[[str], Awaitable[Streams]],
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    request, unparsable = HOSTILE[name]
    caplog.set_level(logging.DEBUG)
    base = await start_tracker(
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),), header_timeout=2
    )
    reader, writer = await connect(base)
    writer.write(request)
    status_line = await asyncio.wait_for(reader.readline(), 5)
    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line
    if unparsable:  # the parser's error is answered and the connection closed
        assert await closed_after(reader) < 3

    ours = [r for r in caplog.records if r.name.startswith(("tracker", "aiohttp", "asyncio"))]
    for record in ours:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno <= logging.WARNING, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert "\n" not in record.getMessage()
    assert "Traceback" not in caplog.text
    told = [r for r in ours if "bad request" in r.getMessage()]
    if unparsable:
        assert len(told) == 1, [r.getMessage() for r in ours]
        assert told[0].getMessage().startswith("127.0.0.1: bad request refused (400 ")
