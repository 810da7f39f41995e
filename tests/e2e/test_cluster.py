"""Many processes on one PostgreSQL store, and some of them killed: two relays with
spools of their own, two trackers (each with its dispatcher) and a webhook receiver;
2,000 messages and 10,000 opens and clicks; in the middle, one tracker is killed with
SIGKILL (its dispatcher goes with it) and the other tracker's dispatcher too. Every hit
a tracker answered is recorded once; every event reaches the receiver at least once,
and each webhook-id counts once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import smtplib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import until
from tests.e2e.conftest import BIN, Running, start
from tests.net import free_port
from tests.postgres import RunDatabase
from tests.receiver import ThreadedReceiver
from tests.sink import ThreadedSink

MESSAGES = 2000
HITS = 10_000
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
KEY = "a" * 43 + "="

pytestmark = pytest.mark.slow


def write_config(
    tmp_path: Path, name: str, *, store_url: str, sink_port: int, http_port: int, hook_port: int
) -> Path:
    """One machine's configuration: all share the store, the signing key and the
    public URL's form; each has its spool and journal."""
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
spool = "{tmp_path / name / "spool"}"
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
[tracker]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
journal = "{tmp_path / name / "hits"}"
[store]
url = "{store_url}"
[signing]
keys = ["{KEY}"]
[config_sets.news]
destinations = ["app"]
[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/events"
secret = "{SECRET}"
timeout = "2s"
"""
    )
    return path


def send(port: int, numbers: range) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for number in numbers:
            message = EmailMessage()
            message["From"] = "news@example.com"
            message["To"] = f"r{number}@example.org"
            message["Subject"] = f"number {number}"
            message["X-Config-Set"] = "news"
            message.set_content("text")
            message.add_alternative(
                f'<html><body><a href="https://shop.example.com/{number}">Shop</a></body></html>',
                subtype="html",
            )
            assert client.send_message(message) == {}


def tracked_urls(sink: ThreadedSink) -> list[str]:
    """The pixel and the link of every copy delivered."""
    return [
        url.decode()
        for arrival in sink.handler.arrivals
        for url in re.findall(rb'(?:src|href)="(http://127[^"]+/[oc]/[^"]+)"', arrival.content)
    ]


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            found |= {int(child) for child in listed.read().split()}
    return {c for c in found if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()}


async def test_a_cluster_loses_nothing_when_a_tracker_and_a_dispatcher_are_killed(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running], postgresql: RunDatabase
) -> None:
    store_url = await postgresql.new_schema()
    hook = ThreadedReceiver()
    hook_port = hook.start()
    try:
        ports = {"a": free_port(), "b": free_port()}
        configs = {
            name: write_config(
                tmp_path,
                name,
                store_url=store_url,
                sink_port=sink.port,
                http_port=port,
                hook_port=hook_port,
            )
            for name, port in ports.items()
        }
        for name in configs:
            (tmp_path / name).mkdir()

        def pixelpost(command: str, name: str) -> Running:
            running = start(
                [str(BIN / "pixelpost"), command, "-c", str(configs[name])], cwd=tmp_path
            )
            processes.append(running)
            return running

        relays = [pixelpost("relay", "a"), pixelpost("relay", "b")]
        trackers = {name: pixelpost("tracker", name) for name in configs}

        # 2,000 messages, half through each relay, from four clients at once.
        quarter = MESSAGES // 4
        with ThreadPoolExecutor(4) as clients:
            sent = [
                clients.submit(
                    send, relays[n % 2].smtp_port, range(n * quarter, (n + 1) * quarter)
                )
                for n in range(4)
            ]
            for done in sent:
                done.result()
        await until(lambda: len(sink.handler.arrivals) == MESSAGES, "every copy", within=120)
        urls = tracked_urls(sink)
        assert len(urls) == 2 * MESSAGES

        # 10,000 opens and clicks, each with a user agent of its own, on both trackers;
        # tracker a is killed after a third of them, b's dispatcher after two thirds.
        rng = random.Random(20)
        plan = [(n, rng.choice(urls)) for n in range(HITS)]
        answered: list[str] = []
        next_hit = 0
        killed_a = killed_dispatcher = False

        async def hit(http: aiohttp.ClientSession, n: int, url: str) -> None:
            target = "a" if n % 2 and not killed_a else "b"
            url = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{ports[target]}", url)
            agent = f"{BROWSER} hit/{n}"
            try:
                headers = {"User-Agent": agent}
                async with http.get(url, headers=headers, allow_redirects=False) as response:
                    await response.read()
                    if response.status in (200, 302):
                        answered.append(agent)
            except aiohttp.ClientError:
                pass  # not answered: the tracker is gone

        async def worker(http: aiohttp.ClientSession) -> None:
            nonlocal next_hit, killed_a, killed_dispatcher
            while next_hit < HITS:
                n, url = plan[next_hit]
                next_hit += 1
                if n == HITS // 3 and not killed_a:
                    trackers["a"].process.send_signal(signal.SIGKILL)
                    killed_a = True
                if n == 2 * HITS // 3 and not killed_dispatcher:
                    [dispatcher] = children(trackers["b"].process.pid)
                    os.kill(dispatcher, signal.SIGKILL)
                    killed_dispatcher = True
                await hit(http, n, url)

        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=40, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(worker(http) for _ in range(20)))
        took = time.monotonic() - started
        assert killed_a
        assert killed_dispatcher
        assert len(answered) >= HITS * 0.9, f"{len(answered)} answered in {took:.1f}s"

        # Tracker a comes back (as its supervisor would start it): it takes over its
        # journal, and with b's dispatcher (restarted by b) delivers what is left.
        trackers["a"] = pixelpost("tracker", "a")

        async def events_in_store() -> list[tuple[str, str, str]]:
            connection = await asyncpg.connect(store_url)
            try:
                rows = await connection.fetch("SELECT id, type, detail FROM events")
            finally:
                await connection.close()
            return [(row[0], row[1], row[2]) for row in rows]

        async def every_answered_hit() -> list[tuple[str, str, str]] | None:
            events = await events_in_store()
            hits = sum(1 for _, kind, _ in events if kind in ("open", "click"))
            return events if hits >= len(answered) else None

        await until(every_answered_hit, "every answered hit in the store", within=60)
        await asyncio.sleep(1.0)
        events = await events_in_store()
        agents = Counter(
            json.loads(detail)["userAgent"]
            for _, kind, detail in events
            if kind in ("open", "click")
        )
        assert set(answered) <= set(agents)  # nothing answered is missing
        assert max(agents.values()) == 1  # nor recorded twice
        # Recorded but not answered: requests in flight to the tracker killed.
        assert len(agents) - len(answered) <= 20
        assert sum(1 for _, kind, _ in events if kind == "send") == MESSAGES
        assert sum(1 for _, kind, _ in events if kind == "delivery") == MESSAGES

        # Every event reaches the receiver (those claimed by the killed dispatchers
        # once their leases lapse), at least once; each webhook-id counts once.
        ids = {event_id for event_id, _, _ in events}
        await until(
            lambda: ids <= set(hook.receiver.delivered_ids),
            f"all {len(ids)} events at the webhook receiver",
            within=120,
        )
        received = Counter(hook.receiver.delivered_ids)
        assert set(received) == ids
        duplicates = sum(count - 1 for count in received.values())
        assert duplicates <= len(ids) // 10, f"{duplicates} deliveries again of {len(ids)}"
        for running in [*relays, *trackers.values()]:
            assert running.stop() == 0
    finally:
        hook.stop()
