"""Statistics and retention in the SQLite store, where they depend on its files: what a
purge leaves in them, a purge beside the tracker's writes and beside counting, an
upgrade from before statistics, and the stats command. What every store must do is in
tests/contract/."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from pixelpost.app.cli import main
from pixelpost.store import SQLiteStore
from pixelpost.store.sqlite import outbox_path
from pixelpost.store.sqlite.schema import migrations
from tests.conftest import until
from tests.contract.campaign import (
    ARCHIVE,
    H0,
    H1,
    A,
    B,
    clicked,
    funnel,
    message,
    opened,
    record_campaign,
    subscription,
)


async def test_retention_deletes_events_cuts_records_and_keeps_the_counts(
    tmp_path: Path,
) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await record_campaign(store)
        before = await funnel(store, config_set="marketing")
        await store.route(ARCHIVE)
        claimed = await store.claim("archive", limit=100, lease=60)
        await store.delivered("archive", [c.seq for c in claimed])
        assert await store.purge(H0) == (0, 0)  # nothing older than that
        assert await store.purge(H1 + 3600) == (18, 5)  # all but the newest event
        assert await funnel(store, config_set="marketing") == before
        assert await store.delivered_at("m1") == (H0 + 1, True)

        # A click long after: published (with what is left of the copy) and counted,
        # but not as a new unique click.
        await store.record_hits([clicked("m1", B, H1 + 7200)])
        assert await store.route(ARCHIVE) == 1
        [late] = await store.claim("archive", limit=100, lease=60)
        after = await funnel(store, config_set="marketing")
    finally:
        await store.close()
    body = json.loads(late.body)
    assert (body["eventType"], body["mail"]) == ("Click", {"messageId": "m1"})
    assert after["totals"]["clicked"]["human"] == {"total": 5, "unique": 2}
    with sqlite3.connect(tmp_path / "s.db") as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (2,)
        mails = connection.execute("SELECT id, mail, config_set, tags FROM messages").fetchall()
    assert ("m1", '{"messageId":"m1"}', "marketing", '["campaign:spring"]') in mails
    assert all(json.loads(mail) == {"messageId": m} for m, mail, _, _ in mails)


async def test_purge_runs_while_hits_are_written(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    stop = asyncio.Event()
    written = 0

    async def tracker() -> None:
        nonlocal written
        while not stop.is_set():
            await store.record_hits([opened("m1", H0 + written)])
            written += 1
            await asyncio.sleep(0.002)  # some 400 hits a second

    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0 - 1) for _ in range(20_000)])
        await store.route([], limit=50_000)
        await store.rollup(limit=50_000)
        busy = asyncio.create_task(tracker())
        await until(lambda: written >= 20, "the tracker writing")  # the purge meets its writes
        try:
            events, _ = await store.purge(H0)
        finally:
            stop.set()
            await busy
    finally:
        await store.close()
    assert events == 20_000
    assert written > 20


def test_the_stats_command_counts_what_is_pending_and_prints_table_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def record() -> None:
        store = await SQLiteStore.open(tmp_path / "s.db")
        try:
            await record_campaign(store)  # not rolled up: the command counts it first
        finally:
            await store.close()

    asyncio.run(record())
    config = tmp_path / "pixelpost.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')

    assert main(["stats", "-c", str(config), "--json", "--config-set", "marketing"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["opened"]["human"]["unique"] == 2
    assert data["totals"]["clicked"]["bot"]["reasons"] == {"click_after_delivery": 1}

    assert main(["stats", "-c", str(config), "--by", "config_set"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("all mail, until ")
    assert [line.split()[0] for line in lines[2:6]] == ["(no", "marketing", "news", "total"]
    assert lines[3].split()[1:5] == ["3", "3", "0", "0"]  # sent delivered bounced complained

    assert main(["stats", "-c", str(config), "--since", "last week"]) == 1
    assert capsys.readouterr().err.startswith("pixelpost: --since: 'last week' is neither")


def test_the_stats_command_shows_engaged_and_unsubscribed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def record() -> None:
        store = await SQLiteStore.open(tmp_path / "s.db")
        try:
            await record_campaign(store)
            await store.record(
                events=[
                    subscription("m3", H1 + 100, source="UnsubscribeHeader"),
                    subscription("m3", H1 + 200, unsubscribe=False),
                    subscription("m4", H1 + 300, source="UnsubscribeMailto"),
                ]
            )
            await store.record_hits([clicked("m3", A, H1 + 400)])  # no open: engaged too
        finally:
            await store.close()

    asyncio.run(record())
    config = tmp_path / "pixelpost.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')

    assert main(["stats", "-c", str(config), "--json", "--config-set", "marketing"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["engaged"] == 3  # m1 and m2 opened and clicked, m3 clicked
    assert totals["unsubscribed"] == {
        "total": 1,
        "unique": 1,
        "UnsubscribeHeader": 1,
        "UnsubscribeLink": 0,
        "UnsubscribeMailto": 0,
    }
    assert totals["resubscribed"] == 1
    assert (totals["rates"]["engagement"], totals["rates"]["unsubscribe"]) == (1.0, 0.3333)

    assert main(["stats", "-c", str(config), "--by", "config_set"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "engaged  unsubscribed" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[2:6]}
    # sent delivered bounced complained opened machine-opens clicked bot-clicks engaged
    # unsubscribed, open rate, click rate, CTOR, engagement, unsubscribe rate
    assert rows["marketing"][1:] == [
        *("3", "3", "0", "0", "2", "1", "3", "1", "3", "1"),
        *("66.7%", "100.0%", "150.0%", "100.0%", "33.3%"),
    ]
    assert rows["news"][9:11] == ["0", "1"]
    assert rows["total"][9:11] == ["3", "2"]
    assert lines[-1] == (
        "unsubscribes: 2 (UnsubscribeHeader 1, UnsubscribeLink 0, UnsubscribeMailto 1),"
        " resubscribes: 1"
    )


async def test_a_store_from_before_statistics_is_upgraded_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for file, schema in ((path, "log"), (outbox_path(path), "outbox")):
        _, _, sql = migrations(schema)[0]
        with sqlite3.connect(file) as connection:
            connection.executescript(sql + ";\nPRAGMA user_version = 1;")
    mail = json.dumps({"messageId": "old", "tags": {"campaign": ["winter"]}})
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO messages VALUES ('old', 'marketing', ?, ?)", (H0, mail))
        connection.executemany(
            "INSERT INTO events (id, message_id, type, created_at, detail)"
            " VALUES (?, 'old', ?, ?, ?)",
            [
                ("e1", "send", H0, "{}"),
                ("e2", "delivery", H0 + 7, "{}"),
                # An open from before classification: a person's, as it was counted then.
                ("e3", "open", H0 + 60, '{"ipAddress":"192.0.2.1","userAgent":"UA"}'),
            ],
        )
    store = await SQLiteStore.open(path)
    try:
        assert await store.delivered_at("old") == (H0 + 7, True)
        data = await funnel(store, tag="campaign:winter")
    finally:
        await store.close()
    assert (data["totals"]["sent"], data["totals"]["delivered"]) == (1, 1)
    assert data["totals"]["opened"]["human"] == {"total": 1, "unique": 1, "proxied": 0}


async def test_purge_goes_no_further_than_counting_was_when_it_began(tmp_path: Path) -> None:
    """Counting that goes on meanwhile is not yet durable (the outbox is not synced at
    each commit): the purge trusts only what it made durable at its start."""
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0 - 1) for _ in range(20_000)])
        await store.route([], limit=50_000)
        await store.rollup(limit=5000)  # a backlog of counting, as after an upgrade

        async def counting() -> None:
            added = 1
            while added:
                added = await store.rollup(limit=5000)

        purge = asyncio.create_task(store.purge(H0))
        await asyncio.gather(purge, counting())
        events, _ = purge.result()
        assert events == 5000
        assert (await store.purge(H0))[0] == 20_000 - 5000 - 1  # the newest stays
    finally:
        await store.close()


async def test_copies_engaged_before_the_upgrade_do_not_count_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await SQLiteStore.open(path)
    try:
        await store.record(messages=[message(m, "marketing") for m in ("m1", "m2", "m3")])
        await store.record_hits([opened("m1", H0), clicked("m2", A, H0)])
        await store.rollup()
    finally:
        await store.close()
    # The outbox as a version before "engaged" left it: no such marks, no such counters.
    [version] = [v for v, name, _ in migrations("outbox") if name.endswith("_engaged.sql")]
    with sqlite3.connect(outbox_path(path)) as connection:
        connection.execute("DELETE FROM stats_firsts WHERE what = 'engaged'")
        connection.execute("DELETE FROM stats WHERE metric = 'engaged'")
        connection.execute(f"PRAGMA user_version = {version - 1}")
        connection.execute("DROP TABLE sns_subscriptions")  # a later migration's
    connection.close()

    store = await SQLiteStore.open(path)
    try:
        await store.record_hits([opened("m1", H1), opened("m2", H1), opened("m3", H1)])
        data = await funnel(store, config_set="marketing")
    finally:
        await store.close()
    # m1 and m2 counted (as an open, a click) before: only m3 is newly engaged.
    assert data["totals"]["engaged"] == 1
    assert data["totals"]["opened"]["human"]["unique"] == 3  # m2's first open is new
