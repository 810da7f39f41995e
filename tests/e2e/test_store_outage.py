"""PostgreSQL out of reach for 30 seconds in the middle of the work, as docs/deploy.md
says pixelpost behaves: the relay goes on taking mail into its spool and sends none
until it can read the suppression list; the tracker goes on answering pixels and links
from their tokens, each hit in its journal on disk before the answer. The process is
even killed (SIGKILL) while the store is away; started again once it is back, it sends
every message and records every answered hit, once."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from tests.conftest import until
from tests.e2e.conftest import BIN, Running, start
from tests.net import free_port
from tests.postgres import RunDatabase
from tests.sink import ThreadedSink
from tests.tcpproxy import tcp_proxy

OUTAGE = 30.0
"""Seconds the store is out of reach (the issue's figure)."""
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


def through(url: str, port: int) -> str:
    """`url` with its server's port replaced by `port` (the proxy's)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


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
journal = "{tmp_path / "hits"}"
[store]
url = "{store_url}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[config_sets.news]
destinations = ["archive"]
[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
"""
    )
    return path


def send(port: int, number: int) -> None:
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = f"r{number}@example.org"
    message["Subject"] = f"number {number}"
    message["X-Config-Set"] = "news"
    message.set_content("text")
    message.add_alternative(f"<html><body><p>Number {number}</p></body></html>", subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        refused = client.send_message(message)
    assert refused == {}


def pixels(sink: ThreadedSink) -> list[str]:
    return [
        url
        for arrival in sink.handler.arrivals
        for url in re.findall(rb'src="(http://[^"]+/o/[^"]+)"', arrival.content)
    ]


async def answered(http: aiohttp.ClientSession, url: bytes, user_agent: str) -> None:
    """One open, answered within a second whatever the store does."""
    started = time.monotonic()
    headers = {"User-Agent": user_agent}
    async with http.get(url.decode(), headers=headers, allow_redirects=False) as response:
        assert response.status == 200
        await response.read()
    assert time.monotonic() - started < 1.0


async def test_postgresql_out_of_reach_for_30_seconds_loses_nothing_even_killed(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running], postgresql: RunDatabase
) -> None:
    store_url = await postgresql.new_schema()
    server_port = urlsplit(store_url).port or 5432
    http_port = free_port()
    with tcp_proxy(server_port) as proxy:
        config = write_config(tmp_path, sink.port, http_port, through(store_url, proxy.port))
        serve = [str(BIN / "pixelpost"), "serve", "-c", str(config)]
        first = start(serve, cwd=tmp_path)
        processes.append(first)
        for number in range(5):
            send(first.smtp_port, number)
        await until(lambda: len(pixels(sink)) == 5, "the first five copies", within=20)
        before = pixels(sink)
        user_agents: list[str] = []
        async with aiohttp.ClientSession() as http:
            for n, url in enumerate(before):
                user_agents.append(f"{BROWSER} before/{n}")
                await answered(http, url, user_agents[-1])

            proxy.down()
            outage_ends = time.monotonic() + OUTAGE
            # Mail is taken, and waits: nothing can be sent without the suppression list.
            for number in range(5, 25):
                send(first.smtp_port, number)
            # Every open is answered, from the token alone, and journaled.
            n = 0
            while time.monotonic() < outage_ends - OUTAGE / 3:
                url = before[n % len(before)]
                user_agents.append(f"{BROWSER} during/{n}")
                await answered(http, url, user_agents[-1])
                n += 1
                await asyncio.sleep(0.05)
            assert len(sink.handler.arrivals) == 5
            assert list((tmp_path / "hits").glob("*.hits"))
            first.stop(signal.SIGKILL)  # the process dies with the store away
            await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))
            proxy.up()

            second = start(serve, cwd=tmp_path)
            processes.append(second)
            # The spooled mail goes out; the journal's hits are recorded.
            await until(lambda: len(pixels(sink)) == 25, "all 25 copies", within=60)
            user_agents.append(f"{BROWSER} after")
            await answered(http, pixels(sink)[-1], user_agents[-1])

        async def every_open() -> list[str] | None:
            found = await opens_by_user_agent(store_url)
            return found if len(found) >= len(user_agents) else None

        await until(every_open, f"{len(user_agents)} opens in the store", within=30)
        await asyncio.sleep(1.0)  # time for a hit recorded twice to show
        recorded = await opens_by_user_agent(store_url)
        assert sorted(recorded) == sorted(user_agents)  # each once: none lost, none twice
        assert not list((tmp_path / "hits").glob("*.hits"))
        assert await count_events(store_url, "send") == 25

        async def delivered() -> bool:
            return await count_events(store_url, "delivery") == 25

        await until(delivered, "25 deliveries", within=30)
        assert second.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in lines if e["eventType"] == "Delivery") == 25


async def opens_by_user_agent(store_url: str) -> list[str]:
    connection = await asyncpg.connect(store_url)
    try:
        rows = await connection.fetch("SELECT detail FROM events WHERE type = 'open'")
    finally:
        await connection.close()
    return [json.loads(row[0])["userAgent"] for row in rows]


async def count_events(store_url: str, kind: str) -> int:
    connection = await asyncpg.connect(store_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM events WHERE type = $1", kind))
    finally:
        await connection.close()
