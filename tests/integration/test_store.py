"""The SQLite store where it depends on its files: migrations, the group commit, busy
locks and cancellation. What every store must do is in tests/contract/."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, open_event, send_event
from pixelpost.store import SQLiteStore, StoreError
from pixelpost.store.sqlite import outbox_path
from pixelpost.store.sqlite.schema import migrations
from tests.conftest import until
from tests.contract.campaign import TO_ARCHIVE_AND_APP, message

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


async def test_migrations_set_the_schema_version(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    await store.close()
    for path, schema in ((tmp_path / "s.db", "log"), (outbox_path(tmp_path / "s.db"), "outbox")):
        with sqlite3.connect(path) as connection:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        assert version == migrations(schema)[-1][0] >= 1
        assert mode == "wal"
    assert outbox_path(tmp_path / "s.db") == tmp_path / "s-outbox.db"
    reopened = await SQLiteStore.open(tmp_path / "s.db")  # nothing to apply twice
    await reopened.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as connection:
        connection.execute("PRAGMA user_version = 999")
    with pytest.raises(StoreError, match=r"schema version 999 \(log\), newer than pixelpost "):
        await SQLiteStore.open(tmp_path / "s.db")


async def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        await SQLiteStore.open(tmp_path / "file" / "s.db")


async def test_concurrent_records_share_commits_and_all_land(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    await store.record(messages=[message("m1", "marketing")])
    events = [open_event("m1", ip="192.0.2.1", user_agent="ua", now=NOW) for _ in range(300)]
    await asyncio.gather(*(store.record(events=[e]) for e in events))
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as connection:
        (count,) = connection.execute("SELECT count(*) FROM events").fetchone()
    assert count == 300


async def test_a_cancelled_caller_leaves_the_store_usable(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    await store.record(messages=[message("m1", "marketing")], events=[send_event("m1", now=NOW)])
    for _ in range(20):
        task = asyncio.create_task(store.route(TO_ARCHIVE_AND_APP))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await store.record(
        events=[Event(id="e2", type=EventType.SEND, message_id="m1", created_at=NOW, detail="{}")]
    )
    await store.route(TO_ARCHIVE_AND_APP)
    assert len(await store.claim("archive", limit=10, lease=30)) == 2
    await store.close()


def write_locked(path: Path) -> bool:
    """Whether another connection holds the write lock of the database at `path`."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


async def test_a_purge_cancelled_while_it_waits_for_a_lock_stops_and_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    """A shutdown that cancels retention while another process holds the outbox must
    stop it (not turn the cancellation into a logged error and carry on) and leave the
    store's connection outside any transaction."""
    store = await SQLiteStore.open(tmp_path / "s.db")
    await store.record(messages=[message("m1", "marketing")], events=[send_event("m1", now=NOW)])
    other = sqlite3.connect(outbox_path(tmp_path / "s.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    purge = asyncio.create_task(store.purge(NOW.timestamp() - 86400))
    # It takes the log's write lock, then waits for the outbox's.
    await until(lambda: write_locked(tmp_path / "s.db"), "the purge waiting for the outbox")
    purge.cancel()
    await asyncio.wait({purge}, timeout=5)
    assert purge.cancelled()  # at once: the caller's cancellation waits for no lock
    other.execute("COMMIT")
    other.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(purge, 15)
    assert await store.purge(NOW.timestamp() - 86400) == (0, 0)
    await store.record(events=[send_event("m1", now=NOW)])
    assert await store.route(TO_ARCHIVE_AND_APP) == 2
    await store.close()
