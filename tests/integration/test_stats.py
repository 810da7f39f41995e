"""Statistics in the real SQLite store: opens and clicks recorded as the tracker records
them, rolled up, read back per set, tag, link and hour; retention purges the events and
keeps the counts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pixelpost.app.cli import main
from pixelpost.core.event_types import EventType
from pixelpost.core.events import bounce_event, delivery_event, send_event
from pixelpost.core.stats import StatsQuery, report
from pixelpost.store import Hit, MessageRecord, Route, SQLiteStore
from pixelpost.store.sqlite import outbox_path
from pixelpost.store.sqlite.schema import migrations
from tests.conftest import until

H0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
H1 = H0 + 3600
A = "https://example.com/a"
B = "https://example.com/b"


def message(message_id: str, config_set: str | None, **tags: str) -> MessageRecord:
    all_tags = {name: [value] for name, value in tags.items()}
    if config_set is not None:
        all_tags["ses:configuration-set"] = [config_set]
    mail = {"messageId": message_id, "tags": all_tags}
    return MessageRecord(
        id=message_id,
        config_set=config_set,
        created_at=datetime.fromtimestamp(H0, UTC),
        mail=json.dumps(mail),
    )


def opened(
    message_id: str, at: float, *, reason: str | None = None, proxy: str | None = None
) -> Hit:
    return Hit(
        kind=EventType.OPEN,
        message_id=message_id,
        ip="192.0.2.1",
        user_agent="UA",
        at=at,
        machine=reason is not None,
        reason=reason,
        proxy=proxy,
    )


def clicked(message_id: str, link: str, at: float, *, reason: str | None = None) -> Hit:
    return Hit(
        kind=EventType.CLICK,
        message_id=message_id,
        ip="192.0.2.1",
        user_agent="UA",
        at=at,
        link=link,
        link_tags="{}",
        machine=reason is not None,
        reason=reason,
    )


async def funnel(store: SQLiteStore, **query: Any) -> dict[str, Any]:
    await store.rollup()
    stats_query = StatsQuery(**query)
    return report(stats_query, await store.stats(stats_query), now=H1 + 3600)


async def record_campaign(store: SQLiteStore) -> None:
    at = datetime.fromtimestamp(H0 + 1, UTC)
    copies = [
        message("m1", "marketing", campaign="spring"),
        message("m2", "marketing", campaign="spring"),
        message("m3", "marketing", campaign="fall"),
        message("m4", "news"),
        message("m5", None),
    ]
    await store.record(
        messages=copies,
        events=[
            *(send_event(m.id, now=at) for m in copies),
            *(
                delivery_event(
                    m,
                    recipients=["r@example.com"],
                    smtp_response="250 ok",
                    processing_ms=5,
                    reporting_mta="relay",
                    now=at,
                )
                for m in ("m1", "m2", "m3", "m4")
            ),
            bounce_event(
                "m5",
                bounce_type="Permanent",
                bounce_subtype="General",
                recipients=[("x@example.com", "5.1.1", "smtp; 550 no")],
                reporting_mta="relay",
                now=at,
            ),
        ],
    )
    await store.record_hits(
        [
            opened("m1", H0 + 5, reason="apple_mpp"),
            clicked("m1", A, H0 + 6, reason="click_after_delivery"),
            opened("m1", H1 + 10),
            opened("m1", H1 + 20),
            opened("m2", H1 + 30, proxy="gmail"),
            clicked("m1", A, H1 + 40),
            clicked("m1", B, H1 + 50),
            clicked("m2", A, H1 + 60),
            clicked("m2", A, H1 + 70),
        ]
    )


async def test_the_funnel_counts_people_and_machines_apart(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await record_campaign(store)
        data = await funnel(store, config_set="marketing")
    finally:
        await store.close()
    totals = data["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]["total"]) == (3, 3, 0)
    assert totals["opened"] == {
        "total": 4,
        "unique": 2,
        "human": {"total": 3, "unique": 2, "proxied": 1},
        "machine": {"total": 1, "unique": 1, "reasons": {"apple_mpp": 1}},
    }
    assert totals["clicked"] == {
        "total": 5,
        "unique": 2,
        "human": {"total": 4, "unique": 2},
        "bot": {"total": 1, "unique": 1, "reasons": {"click_after_delivery": 1}},
    }
    assert totals["rates"] == {
        "delivery": 1.0,
        "open": round(2 / 3, 4),
        "click": round(2 / 3, 4),
        "click_to_open": 1.0,
        "machine_open_share": 0.25,
        "bot_click_share": 0.2,
    }


async def test_groups_by_hour_link_tag_and_set(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await record_campaign(store)
        hours = await funnel(store, config_set="marketing", by="hour")
        links = await funnel(store, config_set="marketing", by="link")
        tags = await funnel(store, by="tag")
        spring = await funnel(store, tag="campaign:spring")
        sets = await funnel(store, by="config_set")
        later = await funnel(store, config_set="marketing", since=H1)
    finally:
        await store.close()

    assert [g["key"] for g in hours["groups"]] == ["2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"]
    first, second = hours["groups"]
    # m1's first open was the machine's at 10:00: the copy's unique open counts there.
    assert (first["opened"]["unique"], first["opened"]["machine"]["unique"]) == (1, 1)
    assert (second["opened"]["unique"], second["opened"]["human"]["unique"]) == (1, 2)
    assert (first["sent"], second["sent"]) == (3, 0)

    assert [g["key"] for g in links["groups"]] == [A, B]  # the most clicked first
    link_a, link_b = links["groups"]
    assert link_a["clicked"]["human"] == {"total": 3, "unique": 2}
    assert (link_a["clicked"]["bot"]["total"], link_b["clicked"]["human"]["total"]) == (1, 1)
    assert links["totals"]["sent"] == 3  # totals stay those of the whole selection

    assert {g["key"]: g["sent"] for g in tags["groups"]} == {
        "campaign:fall": 1,
        "campaign:spring": 2,
    }
    assert spring["totals"]["opened"]["human"]["unique"] == 2
    assert spring["totals"]["sent"] == 2

    assert {g["key"]: (g["sent"], g["bounced"]["Permanent"]) for g in sets["groups"]} == {
        None: (1, 1),
        "marketing": (3, 0),
        "news": (1, 0),
    }
    assert later["totals"]["sent"] == 0
    assert later["totals"]["clicked"]["human"]["total"] == 4
    assert later["since"] == "2026-11-29T11:00:00Z"


async def test_a_copy_counts_once_as_unique_across_roll_ups(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0), clicked("m1", A, H0)])
        assert await store.rollup() == 2
        assert await store.rollup() == 0  # nothing new
        await store.record_hits(
            [opened("m1", H0 + 60), clicked("m1", A, H0 + 60), clicked("m1", B, H0 + 61)]
        )
        data = await funnel(store, config_set="marketing", by="link")
    finally:
        await store.close()
    assert data["totals"]["opened"]["human"] == {"total": 2, "unique": 1, "proxied": 0}
    assert data["totals"]["clicked"]["human"] == {"total": 3, "unique": 1}
    assert {g["key"]: g["clicked"]["human"]["unique"] for g in data["groups"]} == {A: 1, B: 1}


ARCHIVE = [Route(config_set="marketing", event_type=t, destination="archive") for t in EventType]


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


async def test_purge_keeps_what_is_not_counted_routed_or_delivered_yet(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0), opened("m1", H0 + 1), opened("m1", H0 + 2)])
        assert await store.purge(H1) == (0, 0)  # not routed: the record stays whole
        await store.route(ARCHIVE)
        assert await store.purge(H1) == (0, 0)  # routed, but not counted or delivered
        await store.rollup()
        assert await store.purge(H1) == (0, 0)  # counted, not delivered
        [first, *rest] = await store.claim("archive", limit=100, lease=60)
        await store.delivered("archive", [first.seq])
        assert await store.purge(H1) == (1, 0)  # the first is gone; its copy still waits
        await store.delivered("archive", [c.seq for c in rest])
        assert await store.purge(H1) == (1, 1)  # the newest event always stays
        # Numbering goes on after a purge: new events are routed and counted.
        await store.record_hits([opened("m1", H1)])
        assert await store.route(ARCHIVE) == 1
        assert await store.rollup() == 1
    finally:
        await store.close()


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


async def test_delivery_time_is_known_to_the_tracker(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m1", "marketing")])
        assert await store.delivered_at("m1") == (H0, False)  # accepted, not delivered yet
        delivered = datetime.fromtimestamp(H0 + 42, UTC)
        await store.record(
            events=[
                delivery_event(
                    "m1",
                    recipients=["r@example.com"],
                    smtp_response="250 ok",
                    processing_ms=5,
                    reporting_mta="relay",
                    now=delivered,
                )
            ]
        )
        assert await store.delivered_at("m1") == (H0 + 42, True)
        assert await store.delivered_at("unknown") is None
    finally:
        await store.close()


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


async def test_ranges_over_days_read_days_and_the_hours_at_their_ends(tmp_path: Path) -> None:
    day = 86400
    times = [H0 + 1800, H0 + day - 7 * 3600, H0 + day + 5 * 3600, H0 + 2 * day - 1]
    times += [H0 + 2 * day + 14 * 3600 - 1, H0 + 4 * day - 10 * 3600, H0 + 2 * day - 34200]
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        await store.record(messages=[message("m", "marketing")])
        await store.record(
            events=[send_event("m", now=datetime.fromtimestamp(t, UTC)) for t in times]
        )
        await store.rollup()
        bounds = [None, H0 - day, H0, H0 + 3600, H0 + 7200 + 5, H0 + day - 8 * 3600]
        bounds += [H0 + 2 * day, H0 + 2 * day + 3600, H0 + 3 * day + 1, H0 + 5 * day]
        bounds += [H0 + 2 * day - 36000 + 60]  # a minute into a day's first hour
        for since in bounds:
            for until in bounds:
                if since is not None and until is not None and since >= until:
                    continue
                low = since // 3600 * 3600 if since is not None else float("-inf")
                high = -(-until // 3600) * 3600 if until is not None else float("inf")
                expected = sum(1 for t in times if low <= t < high)
                for by in (None, "day", "hour"):
                    query = StatsQuery(since=since, until=until, by=by)  # type: ignore[arg-type]
                    table = await store.stats(query)
                    assert table.totals.get("sent", 0) == expected, (since, until)
                    groups = sum(g.get("sent", 0) for g in table.groups.values())
                    assert groups == (expected if by else 0), (since, until, by)
    finally:
        await store.close()


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
