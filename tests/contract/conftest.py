"""The store's contract: each role of pixelpost.store.base, tested through the Protocol
alone, against every implementation: SQLite, and PostgreSQL on the machine's server (a
schema per store, tests/postgres.py). A new implementation adds its name to
`IMPLEMENTATIONS` and a branch to `open_store`, and must pass every test here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pixelpost.store import PostgreSQLStore, SQLiteStore, Store
from tests.postgres import RunDatabase

IMPLEMENTATIONS = ["sqlite", "postgresql"]

StoreOpener = Callable[..., Awaitable[Store]]


@pytest.fixture(params=IMPLEMENTATIONS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreOpener]:
    """Opens a new, empty store of the implementation under test (with `clock=` for
    its time), or one opened before again (`again=`), closed after the test."""
    opened: list[Store] = []
    places: list[str] = []
    """Where each store of `opened` is (a file, or a schema's URL)."""
    database: RunDatabase | None = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgresql")

    async def open_one(
        *, clock: Callable[[], float] = time.time, again: int | None = None
    ) -> Store:
        """A new store; with `again`, the `again`-th opened store once more, as another
        process opens it."""
        store: Store
        if database is None:
            number = len(opened) if again is None else again
            place = str(tmp_path / f"s{number}.db")
            store = await SQLiteStore.open(Path(place), clock=clock)
        else:
            place = await database.new_schema() if again is None else places[again]
            store = await PostgreSQLStore.open(place, clock=clock)
        opened.append(store)
        places.append(place)
        return store

    yield open_one
    for store in opened:
        await store.close()
