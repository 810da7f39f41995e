"""The tracker over real HTTP in front of a store that is slow or down: answers come
within a bounded time, and every hit reaches the real SQLite store once it can take it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import TokenCodec
from pixelpost.store import Hit, HitBuffer, HitRecorder, SQLiteStore, StoreError
from pixelpost.store.journal import HitJournal
from tests.conftest import AppServer, events_of, recorded, until
from tracker.app import create_app
from tracker.auth import Access
from tracker.metrics import Metrics
from tracker.views import Views

codec = TokenCodec([os.urandom(32)])
FAST = 0.5
"""Seconds within which a pixel or a redirect is answered, whatever the store does (the
answer waits 50 ms for its commit at most; with the store locked it used to wait 10 s
and more)."""

TrackerStarter = Callable[..., Awaitable[tuple[str, HitBuffer]]]


@pytest.fixture
async def start_tracker(store: SQLiteStore, serve_app: AppServer) -> AsyncIterator[TrackerStarter]:
    """Starts trackers wired as `pixelpost tracker` wires them: views recording through a
    hit buffer into `recorder` (the real store unless told), with its metrics."""
    buffers: list[HitBuffer] = []

    async def start(
        *, recorder: HitRecorder | None = None, **options: Any
    ) -> tuple[str, HitBuffer]:
        metrics = Metrics()
        hits = HitBuffer(recorder or store, on_dropped=metrics.unrecorded.inc, **options)
        buffers.append(hits)
        await hits.start()
        metrics.buffered.set_function(lambda: hits.held)
        views = Views(
            codec=codec,
            recorder=hits,
            trusted_proxies=(),
            anonymize_ip=False,
            metrics=metrics,
            delivered_at=store.delivered_at,
        )
        app = create_app(
            views=views, metrics=metrics, access=Access(None), stats=store, suppression=store
        )
        return await serve_app(app), hits

    yield start
    for hits in buffers:
        await hits.close(grace=0.5)


@pytest.fixture
def locked(store: SQLiteStore) -> Iterator[sqlite3.Connection]:
    """Another writer holding the store's write lock (as `sqlite3` in another process
    would) until the test rolls it back, or the test ends."""
    connection = sqlite3.connect(store.path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    yield connection
    if connection.in_transaction:
        connection.execute("ROLLBACK")
    connection.close()


def hit_urls(base: str, opens: int, clicks: int) -> list[str]:
    message_id = new_message_id()
    return [f"{base}/o/{codec.open_token(message_id)}"] * opens + [
        f"{base}/c/{codec.click_token(message_id, n, f'https://example.com/{n}', {})}"
        for n in range(clicks)
    ]


async def answered_fast(http: aiohttp.ClientSession, url: str) -> None:
    started = asyncio.get_running_loop().time()
    async with http.get(url, allow_redirects=False) as response:
        assert response.status in (200, 302)
    assert asyncio.get_running_loop().time() - started < FAST


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_a_locked_store_holds_no_answer_up_and_loses_no_hit(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    locked: sqlite3.Connection,
) -> None:
    base, hits = await start_tracker()
    for url in hit_urls(base, opens=3, clicks=3):
        await answered_fast(http, url)
    assert await metric(http, base, "pixelpost_hits_buffered") == 6
    assert recorded(store) == []

    locked.execute("ROLLBACK")  # the other writer is done: the store takes them now
    events = await events_of(store, open=3, click=3)
    assert len(events) == 6
    await until(lambda: hits.held == 0, "the buffer empties")
    assert await metric(http, base, "pixelpost_hits_buffered") == 0
    assert await metric(http, base, "pixelpost_hits_unrecorded_total") == 0


async def test_a_full_buffer_drops_hits_and_says_so_rather_than_wait(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    locked: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, hits = await start_tracker(capacity=2)
    for url in hit_urls(base, opens=5, clicks=0):
        await answered_fast(http, url)
    assert await metric(http, base, "pixelpost_hits_unrecorded_total") == 3
    assert await metric(http, base, "pixelpost_hits_buffered") == 2
    full = [r for r in caplog.records if "the buffer is full" in r.getMessage()]
    assert len(full) == 1  # one line for the three, not one each
    assert full[0].levelno == logging.ERROR

    locked.execute("ROLLBACK")
    await until(lambda: hits.held == 0, "the buffer empties")
    assert [kind for kind, _, _ in recorded(store)] == ["open", "open"]


class Outage:
    """The real store behind a switch: while `down`, every write fails as it does when
    the store cannot be reached."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.down = True

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        if not self.down:
            return self.store.record_hits(hits)
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(StoreError("cannot write to the store: disk I/O error"))
        return failed


async def test_hits_the_store_refused_are_given_to_it_again(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pixelpost.store.buffer")
    outage = Outage(store)
    base, hits = await start_tracker(recorder=outage, retry_delays=[0.05])
    for url in hit_urls(base, opens=2, clicks=2):
        await answered_fast(http, url)
    assert await metric(http, base, "pixelpost_hits_buffered") == 4
    assert any("kept in memory" in r.getMessage() for r in caplog.records)

    outage.down = False
    await events_of(store, open=2, click=2)
    await until(lambda: hits.held == 0, "the buffer empties")
    assert len(recorded(store)) == 4
    assert any("held in memory are recorded" in r.getMessage() for r in caplog.records)


async def test_hits_the_store_never_takes_are_counted_at_shutdown(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, hits = await start_tracker(recorder=Outage(store), retry_delays=[0.05])
    for url in hit_urls(base, opens=2, clicks=0):
        await answered_fast(http, url)

    await hits.close(grace=0.2)
    assert await metric(http, base, "pixelpost_hits_unrecorded_total") == 2
    assert any("2 hits (opens and clicks) not recorded" in r.getMessage() for r in caplog.records)
    await answered_fast(http, hit_urls(base, opens=1, clicks=0)[0])  # closed: still answered
    assert await metric(http, base, "pixelpost_hits_unrecorded_total") == 3


async def test_with_a_journal_hits_are_on_disk_before_the_answer_and_go_once_recorded(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    tmp_path: Path,
    locked: sqlite3.Connection,
) -> None:
    folder = tmp_path / "hits"
    base, _hits = await start_tracker(journal=HitJournal(folder))
    for answered, url in enumerate(hit_urls(base, opens=2, clicks=2), start=1):
        await answered_fast(http, url)
        # Answered: its hit is in a file already (the store is locked: not committed).
        assert journaled(folder) == answered
    assert recorded(store) == []

    locked.execute("ROLLBACK")
    await events_of(store, open=2, click=2)
    await until(lambda: journaled(folder) == 0 or None, "the journal's files gone")
    assert len(recorded(store)) == 4


async def test_hits_a_dead_process_journaled_are_recorded_by_the_next_once(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "hits"
    dead = HitJournal(folder)
    base, _hits = await start_tracker(recorder=Outage(store), journal=dead, retry_delays=[60])
    for url in hit_urls(base, opens=3, clicks=2):
        await answered_fast(http, url)
    assert journaled(folder) == 5

    # Another process starting meanwhile leaves a live process's hits alone.
    alive = HitBuffer(store, journal=HitJournal(folder))
    assert await alive.start() == 0
    await alive.close()

    dead.close()  # what the kernel does for a killed process: its lock goes, files stay
    assert journaled(folder) == 5
    heirs = [HitBuffer(store, journal=HitJournal(folder), retry_delays=[0.01]) for _ in range(3)]
    taken = await asyncio.gather(*(heir.start() for heir in heirs))
    assert sorted(taken) == [0, 0, 5]  # one of the three takes them over
    await events_of(store, open=3, click=2)
    await until(lambda: journaled(folder) == 0 or None, "the journal's files gone")
    for heir in heirs:
        await heir.close()
    assert len(recorded(store)) == 5


def journaled(folder: Path) -> int:
    """Hits in the journal's files."""
    return sum(len(json.loads(path.read_bytes())) for path in folder.glob("*.hits"))
