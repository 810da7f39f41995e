"""What the PostgreSQL store does beyond the contract (tests/contract/), for many
processes on one database: migrating once when they start together, routing and
claiming without taking anything twice or skipping what commits late, one roll-up at a
time, notices that wake idle dispatchers, and clear errors that keep passwords out."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from pixelpost.core.event_types import EventType
from pixelpost.core.events import send_event
from pixelpost.store import Hit, PostgreSQLStore, Route, SQLiteStore, StoreError
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import latest_version
from tests.conftest import until
from tests.contract.campaign import ARCHIVE, H0, funnel, message, opened, record_campaign
from tests.net import free_port
from tests.postgres import RunDatabase

BIN = Path(sys.executable).parent
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
Opener = Callable[[str], Awaitable[PostgreSQLStore]]


@pytest.fixture
async def schema(postgresql: RunDatabase) -> str:
    return await postgresql.new_schema()


@pytest.fixture
async def open_pg() -> AsyncIterator[Opener]:
    """Opens stores (each with its own pool, as separate processes have), closed after."""
    opened: list[PostgreSQLStore] = []

    async def open_one(url: str) -> PostgreSQLStore:
        store = await PostgreSQLStore.open(url)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def test_ten_processes_starting_together_migrate_once(schema: str, open_pg: Opener) -> None:
    stores = await asyncio.gather(*(open_pg(schema) for _ in range(10)))
    connection = await asyncpg.connect(schema)
    try:
        rows = await connection.fetch("SELECT version FROM pixelpost_migrations ORDER BY version")
    finally:
        await connection.close()
    assert [row[0] for row in rows] == list(range(1, latest_version() + 1))
    # Each of them works on the one store.
    await stores[3].record(
        messages=[message("m1", "marketing")], events=[send_event("m1", now=NOW)]
    )
    assert await stores[7].event_counts() == {EventType.SEND: 1}


async def test_a_store_of_a_newer_version_is_refused_untouched(
    schema: str, open_pg: Opener
) -> None:
    await (await open_pg(schema)).close()
    connection = await asyncpg.connect(schema)
    try:
        await connection.execute(
            "INSERT INTO pixelpost_migrations (version, name) VALUES (999, 'x')"
        )
    finally:
        await connection.close()
    with pytest.raises(StoreError, match="schema version 999, newer than pixelpost"):
        await PostgreSQLStore.open(schema)


async def test_opening_without_create_needs_a_store_there(schema: str) -> None:
    with pytest.raises(
        StoreError, match=r"no pixelpost store in postgresql://.*pixelpost migrate"
    ):
        await PostgreSQLStore.open(schema, create=False)


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await PostgreSQLStore.open(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/mail")
    assert time.monotonic() - started < 10
    assert f"postgresql://app@127.0.0.1:{port}/mail" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


async def test_an_event_committed_late_is_routed_and_counted_all_the_same(
    schema: str, open_pg: Opener
) -> None:
    """Numbers are given when events are written, commits land in any order: routing
    and counting must not skip the lower number that commits last."""
    store = await open_pg(schema)
    await store.record(messages=[message("m1", "marketing"), message("m2", "marketing")])
    late = await asyncpg.connect(schema)
    try:
        transaction = late.transaction()
        await transaction.start()
        row = ("e-late", "m1", "send", H0, "{}")
        # (A counters' shard of its own: the store's must not wait on this transaction.)
        await late.execute(queries.INSERT_EVENTS, *([v] for v in row), -1)
        await store.record(events=[send_event("m2", now=NOW)])  # a higher number, committed first
        assert await store.route(ARCHIVE) == 1
        assert await store.rollup() == 1
        await transaction.commit()
    finally:
        await late.close()
    assert await store.route(ARCHIVE) == 1
    assert await store.rollup() == 1
    claimed = await store.claim("archive", limit=10, lease=30)
    assert sorted(c.message_id for c in claimed) == ["m1", "m2"]
    assert (await funnel(store))["totals"]["sent"] == 2


async def test_competing_dispatchers_route_and_claim_each_delivery_once(
    schema: str, open_pg: Opener
) -> None:
    stores = [await open_pg(schema) for _ in range(4)]
    copies = [message(f"m{n}", "marketing") for n in range(300)]
    await stores[0].record(messages=copies, events=[send_event(m.id, now=NOW) for m in copies])
    await stores[1].record_hits([opened(m.id, H0 + n) for n, m in enumerate(copies)])

    async def route_all(store: PostgreSQLStore) -> int:
        routed = 0
        while n := await store.route(ARCHIVE, limit=37):
            routed += n
        return routed

    assert sum(await asyncio.gather(*(route_all(s) for s in stores))) == 600

    async def claim_all(store: PostgreSQLStore) -> list[str]:
        taken: list[str] = []
        while batch := await store.claim("archive", limit=23, lease=60):
            taken += [c.event_id for c in batch]
        return taken

    taken = await asyncio.gather(*(claim_all(s) for s in stores))
    every = [event_id for some in taken for event_id in some]
    assert len(every) == 600
    assert len(set(every)) == 600
    assert sum(1 for some in taken if some) >= 2  # they did compete


async def test_one_roll_up_at_a_time_counts_each_event_once(schema: str, open_pg: Opener) -> None:
    stores = [await open_pg(schema) for _ in range(3)]
    await record_campaign(stores[0])

    async def roll_up(store: PostgreSQLStore) -> int:
        total = 0
        for _ in range(50):
            total += await store.rollup(limit=2)
        return total

    counted = await asyncio.gather(*(roll_up(s) for s in stores))
    assert sum(counted) == sum((await stores[0].event_counts()).values())
    totals = (await funnel(stores[2]))["totals"]
    assert (totals["sent"], totals["delivered"]) == (5, 4)
    assert totals["opened"]["human"] == {"total": 3, "unique": 2, "proxied": 1}
    assert totals["clicked"]["human"] == {"total": 4, "unique": 2}


async def test_idle_dispatchers_hear_of_new_events_and_deliveries(
    schema: str, open_pg: Opener
) -> None:
    listening, recording = await open_pg(schema), await open_pg(schema)
    heard_events: list[float] = []
    heard_deliveries: list[str] = []
    await listening.listen(
        events=lambda: heard_events.append(time.monotonic()), deliveries=heard_deliveries.append
    )
    await until(lambda: heard_events or None, "the first notice, on listening", within=10)
    heard_events.clear()
    await recording.record(
        messages=[message("m1", "marketing")], events=[send_event("m1", now=NOW)]
    )
    await until(lambda: heard_events or None, "a notice of the new event", within=5)
    assert await recording.route(ARCHIVE) == 1
    await until(lambda: "archive" in heard_deliveries or None, "a notice for archive", within=5)


async def test_a_hit_reads_the_same_on_both_stores(
    schema: str, open_pg: Opener, tmp_path: Path
) -> None:
    """Opens and clicks become events inside each database: consumers get the same
    bytes from either."""
    hits = [
        Hit(
            EventType.OPEN,
            "m1",
            "198.51.100.7",
            'Mail "ü"\n\\',
            H0 + 0.25,
            machine=True,
            reason="apple_mpp",
        ),
        Hit(EventType.OPEN, "m1", "198.51.100.7", "UA", H0 + 1.5, proxy="gmail"),
        Hit(
            EventType.CLICK,
            "m1",
            "2001:db8::1",
            "UA",
            H0 + 2.75,
            link='https://x.example/é?a=1&b="2"',
            link_tags=json.dumps({"k": ["v"]}, separators=(",", ":")),
        ),
        Hit(
            EventType.CLICK,
            "m1",
            "192.0.2.1",
            "UA",
            H0 + 3.5,
            link="https://x.example/",
            machine=True,
            reason="head_request",
        ),
    ]
    routes = [Route(config_set="marketing", event_type=t, destination="d") for t in EventType]
    bodies = []
    sqlite_store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        for store in (sqlite_store, await open_pg(schema)):
            await store.record(messages=[message("m1", "marketing")])
            await store.record_hits(hits)
            await store.route(routes)
            bodies.append([c.body for c in await store.claim("d", limit=10, lease=5)])
    finally:
        await sqlite_store.close()
    assert len(bodies[1]) == 4
    assert bodies[0] == bodies[1]


async def test_ten_migrate_commands_at_once_migrate_once(schema: str, tmp_path: Path) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(f'[store]\nurl = "{schema}"\n')
    commands = [
        await asyncio.create_subprocess_exec(
            str(BIN / "pixelpost"),
            "migrate",
            "-c",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(10)
    ]
    results = [await command.communicate() for command in commands]
    assert [command.returncode for command in commands] == [0] * 10, results
    for stdout, _ in results:
        assert "migrated to this version's schema" in stdout.decode()
        assert "@" not in stdout.decode().split("postgresql://", 1)[1].split("/", 1)[0]
    applied = [
        line for _, err in results for line in err.decode().splitlines() if "applying" in line
    ]
    assert len(applied) == latest_version()  # each migration once, by one of them
    connection = await asyncpg.connect(schema)
    try:
        versions = await connection.fetch("SELECT version FROM pixelpost_migrations")
    finally:
        await connection.close()
    assert sorted(row[0] for row in versions) == list(range(1, latest_version() + 1))


async def test_migrate_refuses_a_server_it_cannot_reach_by_name(tmp_path: Path) -> None:
    config = tmp_path / "pixelpost.toml"
    port = free_port()
    config.write_text(f'[store]\nurl = "postgresql://app:pw-xyz@127.0.0.1:{port}/mail"\n')
    command = await asyncio.create_subprocess_exec(
        str(BIN / "pixelpost"),
        "migrate",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await command.communicate()
    assert command.returncode != 0
    assert f"postgresql://app@127.0.0.1:{port}/mail" in stderr.decode()
    assert "pw-xyz" not in (stdout + stderr).decode()
    assert "Traceback" not in stderr.decode()
