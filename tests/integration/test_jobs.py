"""The background jobs beside the dispatcher, on a real SQLite store: the roll-up counts
events as they come without anyone asking, and retention applies `retention_days` by
the clock it is given."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from pipeline.jobs import Jobs, catch_up
from pixelpost.core.event_types import EventType
from pixelpost.core.stats import StatsQuery, report
from pixelpost.store import Route, SQLiteStore
from tests.conftest import until
from tests.contract.campaign import H0, H1, message, opened, record_campaign

DAY = 86400.0


async def opens_counted(store: SQLiteStore) -> int:
    funnel = report(StatsQuery(config_set="marketing"), await store.stats(StatsQuery()), now=H1)
    return int(funnel["totals"]["opened"]["total"])


async def test_the_roll_up_counts_new_events_in_the_background(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    jobs = Jobs(store=store, retention_days=30, clock=lambda: H0)
    try:
        await store.record(messages=[message("m1", "marketing")])
        jobs.start()
        await store.record_hits([opened("m1", H0), opened("m1", H0 + 1)])

        async def counted(expected: int) -> bool:
            return await opens_counted(store) == expected

        await until(lambda: counted(2), "the first opens counted")
        await store.record_hits([opened("m1", H0 + 2)])
        await until(lambda: counted(3), "an open recorded later counted too")
    finally:
        await jobs.stop()
        await store.close()


def events_kept(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])


async def test_retention_deletes_by_the_clock_it_is_given(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await record_campaign(store)
        await store.route(
            [Route(config_set="marketing", event_type=t, destination="x") for t in EventType]
        )
        claimed = await store.claim("x", limit=100, lease=60)
        await store.delivered("x", [c.seq for c in claimed])
        await catch_up(store)
        recorded = events_kept(tmp_path / "s.db")
        keep = Jobs(store=store, retention_days=30, clock=lambda: H1 + 3600 + 29 * DAY)
        await keep.purge()
        assert events_kept(tmp_path / "s.db") == recorded  # all within 30 days
        drop = Jobs(store=store, retention_days=30, clock=lambda: H1 + 3600 + 30 * DAY)
        await drop.purge()
        assert events_kept(tmp_path / "s.db") == 1  # all but the newest event
    finally:
        await store.close()


async def test_catch_up_logs_its_progress_on_a_long_backlog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.jobs.PROGRESS_EVERY", 2)
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0 + i) for i in range(5)])
        with caplog.at_level(logging.INFO, logger="pipeline.jobs"):
            assert await catch_up(store) == 5
        assert await catch_up(store) == 0
    finally:
        await store.close()
    assert "events counted so far" in caplog.text
