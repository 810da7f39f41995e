"""`pixelpost store copy`: a SQLite store, filled through the store's API with work in
every state, copied into the machine's PostgreSQL; the copy then answers through the
Protocol as the source does, and goes on from where the source was. The command line
runs as a user runs it, in a subprocess."""

from __future__ import annotations

import asyncio
import getpass
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pipeline.jobs import catch_up
from pixelpost.app.cli import main
from pixelpost.app.store_copy import TABLES, copy
from pixelpost.core.event_types import EventType
from pixelpost.core.events import SubscriptionSource, send_event
from pixelpost.core.stats import StatsQuery
from pixelpost.core.subscription import Subscriber, unsubscribed
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store import (
    DeadLetter,
    DestinationCounts,
    MessageRecord,
    PostgreSQLStore,
    Route,
    SQLiteStore,
    Store,
)
from pixelpost.store.postgresql.database import describe, schema_version
from pixelpost.store.sqlite.schema import migrations
from tests.clock import Clock
from tests.contract.campaign import (
    H0,
    H1,
    TO_ARCHIVE_AND_APP,
    A,
    B,
    clicked,
    delivered,
    message,
    opened,
    record_campaign,
)
from tests.postgres import RunDatabase

BIN = Path(sys.executable).parent
DAY = 86400.0
ROUTES = [
    *TO_ARCHIVE_AND_APP,
    *(Route(config_set="news", event_type=t, destination="hooks") for t in EventType),
]
GONE = "disabled: the endpoint answered HTTP 410 Gone"
SNAPSHOT_NOTE = (
    "events recorded after the snapshot are not copied: stop the relay and the tracker "
    "before the final copy"
)
NOT_ROUTED = 5
"""Events that `fill` leaves not routed, the last ones."""
NOT_COUNTED = 3
"""Events that `fill` leaves not counted, the last ones."""


async def fill(store: Store, clock: Clock) -> None:
    """Work in every state: copies cut to stubs, events delivered, pending, retried,
    dead, to a disabled destination, not routed yet, not counted yet (fewer); the suppression
    list in the account's scope and a set's."""
    # Old copies, routed, counted and delivered: retention cuts them to stubs.
    await store.record(
        messages=[message("o1", "marketing", campaign="old"), message("o2", "news")],
        events=delivered(["o1", "o2"], H0 + 1),
    )
    await store.record_hits([opened("o1", H0 + 10), clicked("o1", A, H0 + 20)])
    await store.route(ROUTES)
    await catch_up(store)
    for destination in ("archive", "app", "hooks"):
        claimed = await store.claim(destination, limit=100, lease=60)
        await store.delivered(destination, [c.seq for c in claimed])
    assert await store.purge(H1 + DAY) == (5, 2)  # the newest event stays

    # The campaign: routed and counted, then delivered, retried, dead, disabled, claimed.
    await record_campaign(store)
    await store.route(ROUTES)
    await catch_up(store)
    first, retried, dead, *rest = await store.claim("archive", limit=100, lease=60)
    await store.delivered("archive", [first.seq, *(c.seq for c in rest[:4])])
    await store.retry("archive", retried.seq, attempts=1, at=clock.now + 3600, error="HTTP 503")
    await store.dead("archive", dead.seq, attempts=8, error="HTTP 500: boom")
    await store.disable("hooks", GONE)
    await store.claim("app", limit=3, lease=60)  # the rest of app's wait, unclaimed

    # Not routed: opens and clicks (one on a stub), a Send, an unsubscribe; the first
    # two of them counted.
    await store.record_hits(
        [opened("m3", H1 + 100), clicked("m2", B, H1 + 200), opened("o1", H1 + 300)]
    )
    await store.record(events=delivered(["m5"], H1 + 400)[:1])
    jane = Subscriber(
        message_id="m1", address="Jane@Example.com", config_set="marketing", account=False
    )
    entry, event = unsubscribed(
        jane, source=SubscriptionSource.HEADER, now=datetime.fromtimestamp(H1 + 500, UTC)
    )
    assert await store.unsubscribe(entry, event)
    assert await store.rollup(limit=NOT_ROUTED - NOT_COUNTED) == NOT_ROUTED - NOT_COUNTED
    await store.suppress(
        [
            Suppressed(
                address="gone@example.org",
                reason=Reason.BOUNCE,
                created_at=datetime.fromtimestamp(H0 + 60, UTC),
                message_id="m5",
            ),
            Suppressed(
                address="manual@example.net",
                reason=Reason.MANUAL,
                created_at=datetime.fromtimestamp(H1, UTC),
            ),
        ]
    )


@dataclass(frozen=True)
class Observed:
    """What a store answers about everything `fill` made."""

    event_counts: dict[EventType, int]
    counts: dict[str, DestinationCounts]
    dead_letters: list[DeadLetter]
    disabled: dict[str, str]
    account: list[Suppressed]
    marketing: list[Suppressed]
    suppressed: frozenset[str]
    stub: MessageRecord | None
    whole: MessageRecord | None
    delivered_at: tuple[float, bool] | None
    oldest: float | None


async def observed(store: Store) -> Observed:
    return Observed(
        event_counts=await store.event_counts(),
        counts=await store.counts(),
        dead_letters=await store.dead_letters(),
        disabled=await store.disabled(),
        account=await store.suppression_list(),
        marketing=await store.suppression_list(config_set="marketing"),
        suppressed=await store.suppressed(
            ["jane@example.com", "gone@example.org", "x@example.com"], "marketing"
        ),
        stub=await store.message("o1"),
        whole=await store.message("m1"),
        delivered_at=await store.delivered_at("m2"),
        oldest=await store.outbox_oldest(["archive", "app"]),
    )


STATS_QUERIES = [
    StatsQuery(),
    StatsQuery(by="hour"),
    StatsQuery(by="link"),
    StatsQuery(by="tag"),
    StatsQuery(config_set="marketing", by="day"),
    StatsQuery(tag="campaign:spring", since=H1, by="hour"),
]


async def test_the_copy_answers_as_the_source_and_goes_on_from_where_it_was(
    tmp_path: Path, postgresql: RunDatabase
) -> None:
    clock = Clock(H1 + DAY)
    source = await SQLiteStore.open(tmp_path / "pixelpost.db", clock=clock)
    url = await postgresql.new_schema()
    try:
        await fill(source, clock)
        # Copied while the source is open, its last commits still in its WAL files.
        copied = await copy(tmp_path / "pixelpost.db", url)
        target = await PostgreSQLStore.open(url, clock=clock)
        try:
            await compare(source, target, clock, copied.last_event)
        finally:
            await target.close()
    finally:
        await source.close()

    assert copied.matches
    assert [c.table for c in copied.tables] == [t.name for t in TABLES]
    by_table = {c.table: (c.source, c.target) for c in copied.tables}
    assert by_table["messages"] == (7, 7)
    assert by_table["route_queue"] == (NOT_ROUTED, NOT_ROUTED)
    assert by_table["rollup_queue"] == (NOT_COUNTED, NOT_COUNTED)
    assert by_table["disabled_destinations"] == (1, 1)
    assert by_table["suppression"] == (3, 3)
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT id, tags, stubbed FROM messages ORDER BY id")
    finally:
        await connection.close()
    assert {r["id"] for r in rows if r["stubbed"]} == {"o1", "o2"}
    assert {r["id"]: r["tags"] for r in rows}["m1"] == ["campaign:spring"]


async def compare(source: Store, target: Store, clock: Clock, last_event: int) -> None:
    before = await observed(source)
    assert await observed(target) == before
    # Not a comparison of two empty answers: `fill` made each of them.
    assert [letter.destination for letter in before.dead_letters] == ["archive", "hooks", "hooks"]
    assert before.disabled == {"hooks": GONE}
    assert before.counts["archive"].pending > 0
    assert before.counts["app"].pending > 0
    assert [entry.reason for entry in before.account] == [Reason.BOUNCE, Reason.MANUAL]
    assert [entry.address for entry in before.marketing] == ["jane@example.com"]
    assert before.suppressed == {"jane@example.com", "gone@example.org"}
    assert before.stub is not None
    assert before.stub.mail == '{"messageId":"o1"}'
    assert before.whole is not None
    assert '"tags"' in before.whole.mail

    # What was not routed is routed now, alike, and nothing else.
    assert [await s.route(ROUTES) for s in (source, target)] == [NOT_ROUTED, NOT_ROUTED]
    assert [await s.route(ROUTES) for s in (source, target)] == [0, 0]
    clock.now += 61  # the claims' leases lapse
    for destination in ("archive", "app", "hooks"):
        claimed = [await s.claim(destination, limit=1000, lease=DAY) for s in (source, target)]
        assert claimed[0] == claimed[1]
        assert claimed[0] or destination == "hooks"
    clock.now += 3600  # the retry is due
    retried = [await s.claim("archive", limit=1000, lease=60) for s in (source, target)]
    assert retried[0] == retried[1]
    assert [c.attempts for c in retried[0]] == [1]

    # What was not counted is counted now, alike, and counted once.
    assert [await catch_up(s) for s in (source, target)] == [NOT_COUNTED, NOT_COUNTED]
    for query in STATS_QUERIES:
        tables = [await s.stats(query) for s in (source, target)]
        assert tables[0] == tables[1], query
    totals = (await source.stats(StatsQuery())).totals
    assert totals["unique_unsubscribes"] == 1
    assert totals["unique_clicks"] == 3

    # New events are numbered after the copied ones, as the source numbers them.
    for store in (source, target):
        await store.record(events=[send_event("m1", now=datetime.fromtimestamp(H1, UTC))])
        assert await store.route(ROUTES) == 1
    new = [await s.claim("archive", limit=10, lease=60) for s in (source, target)]
    assert [c.seq for c in new[0]] == [c.seq for c in new[1]] == [last_event + 1]


async def test_a_store_written_to_meanwhile_is_copied_as_of_one_snapshot(
    tmp_path: Path, postgresql: RunDatabase
) -> None:
    """The tracker goes on recording opens while the copy reads: the copy holds the
    events of one moment, with the counters and the queues of that moment."""
    source = await SQLiteStore.open(tmp_path / "pixelpost.db")
    url = await postgresql.new_schema()
    await source.record(messages=[message("m1", "marketing")])
    for start in range(0, 20_000, 1000):
        await source.record_hits([opened("m1", H0 + start + n) for n in range(1000)])
    stop = asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        while not stop.is_set():
            await source.record_hits([opened("m1", H1 + written + n) for n in range(10)])
            written += 10

    writer = asyncio.create_task(write())
    try:
        before = written
        copied = await copy(tmp_path / "pixelpost.db", url)
        during = written - before
    finally:
        stop.set()
        await writer
    recorded = (await source.event_counts())[EventType.OPEN]
    await source.close()

    assert copied.matches
    assert during > 0  # commits went on while the copy ran
    assert 20_000 <= copied.last_event < recorded
    target = await PostgreSQLStore.open(url)
    try:
        assert await target.event_counts() == {EventType.OPEN: copied.last_event}
        routed = 0
        while batch := await target.route(TO_ARCHIVE_AND_APP, limit=5000):
            routed += batch
        assert routed == copied.last_event
        assert (await target.outbox_depth())["archive"] == copied.last_event
    finally:
        await target.close()


# -- The command line ----------------------------------------------------------------


def make_source(tmp_path: Path) -> Path:
    """A filled SQLite store, closed; its log's path."""
    path = tmp_path / "pixelpost.db"

    async def make() -> None:
        clock = Clock(H1 + DAY)
        store = await SQLiteStore.open(path, clock=clock)
        try:
            await fill(store, clock)
        finally:
            await store.close()

    asyncio.run(make())
    return path


def with_password(url: str, password: str) -> str:
    """`url` with a password (the test server trusts its clients and ignores it)."""
    parts = urlsplit(url)
    user = parts.username or getpass.getuser()
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def pixelpost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pixelpost"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_command_copies_and_prints_the_counts(tmp_path: Path, postgresql: RunDatabase) -> None:
    path = make_source(tmp_path)
    url = with_password(asyncio.run(postgresql.new_schema()), "hunter2")

    result = pixelpost("store", "copy", "--from", f"sqlite:///{path}", "--to", url)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TABLE", "SOURCE", "TARGET", "CHECK"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert list(rows) == [t.name for t in TABLES]
    assert rows["messages"] == ["7", "7", "ok"]
    assert all(check == "ok" and source == target for source, target, check in rows.values())
    assert lines[-1] == f"copied up to event 30; {SNAPSHOT_NOTE}"
    for table in TABLES:  # a line of progress per table, on standard error
        assert f"store copy: {table.name}: " in result.stderr
    assert "hunter2" not in result.stdout + result.stderr

    async def read() -> tuple[dict[EventType, int], int]:
        target = await PostgreSQLStore.open(url)
        try:
            return await target.event_counts(), len(await target.suppression_list())
        finally:
            await target.close()

    counts, listed = asyncio.run(read())
    assert counts[EventType.OPEN] == 7
    assert listed == 2


def test_a_target_with_data_is_refused_and_left_as_it_was(
    tmp_path: Path, postgresql: RunDatabase
) -> None:
    path = make_source(tmp_path)
    url = asyncio.run(postgresql.new_schema())

    async def seed() -> None:
        target = await PostgreSQLStore.open(url)
        try:
            await target.record(
                messages=[message("x1", "marketing")],
                events=[send_event("x1", now=datetime.fromtimestamp(H0, UTC))],
            )
        finally:
            await target.close()

    async def read() -> tuple[dict[EventType, int], bool, bool]:
        target = await PostgreSQLStore.open(url)
        try:
            return (
                await target.event_counts(),
                await target.message("x1") is not None,
                await target.message("m1") is not None,
            )
        finally:
            await target.close()

    asyncio.run(seed())

    result = pixelpost("store", "copy", "--from", f"sqlite:///{path}", "--to", url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert f"the target {describe(url)} is not empty (it holds messages, events," in (
        result.stderr
    )
    assert "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert asyncio.run(read()) == ({EventType.SEND: 1}, True, False)


def test_a_missing_source_is_refused_before_the_target_is_touched(
    tmp_path: Path, postgresql: RunDatabase
) -> None:
    url = asyncio.run(postgresql.new_schema())
    missing = tmp_path / "nothing" / "pixelpost.db"

    result = pixelpost("store", "copy", "--from", f"sqlite:///{missing}", "--to", url)

    assert result.returncode == 1
    assert result.stderr == (
        f"pixelpost: no store at {missing} (--from): the file does not exist\n"
    )
    assert asyncio.run(schema_version(url, within=5)) is None  # no tables made there


def test_only_sqlite_to_postgresql_is_copied(
    tmp_path: Path, postgresql: RunDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_password(asyncio.run(postgresql.new_schema()), "hunter2")
    status = main(["store", "copy", "--from", url, "--to", f"sqlite:///{tmp_path / 'p.db'}"])
    assert status == 1
    error = capsys.readouterr().err
    assert error == (
        f"pixelpost: cannot copy from {describe(url)} to sqlite:///{tmp_path / 'p.db'}: "
        "pixelpost store copy copies a SQLite store into PostgreSQL "
        "(--from sqlite:///PATH --to postgresql://…)\n"
    )
    assert not (tmp_path / "p.db").exists()


def test_a_log_without_its_outbox_is_refused(
    tmp_path: Path, postgresql: RunDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_source(tmp_path)
    outbox = tmp_path / "pixelpost-outbox.db"
    outbox.unlink()
    url = asyncio.run(postgresql.new_schema())
    assert main(["store", "copy", "--from", f"sqlite:///{path}", "--to", url]) == 1
    assert capsys.readouterr().err == (
        f"pixelpost: no store at {path} (--from): its outbox {outbox} is missing\n"
    )
    assert asyncio.run(schema_version(url, within=5)) is None


def test_a_store_of_another_schema_version_is_refused(
    tmp_path: Path, postgresql: RunDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that an older pixelpost left, not migrated yet: its tables are not what
    this version copies."""
    path = make_source(tmp_path)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA user_version = 3")
    finally:
        connection.close()
    url = asyncio.run(postgresql.new_schema())
    assert main(["store", "copy", "--from", f"sqlite:///{path}", "--to", url]) == 1
    assert capsys.readouterr().err == (
        f"pixelpost: store {path} has schema version 3 (log), this pixelpost copies version "
        f"{migrations('log')[-1][0]}: run `pixelpost migrate` with this version on it first "
        "(or copy it with the version that wrote it)\n"
    )
    assert asyncio.run(schema_version(url, within=5)) is None
