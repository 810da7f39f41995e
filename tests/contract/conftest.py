"""The store's contract: each role of pixelpost.store.base, tested through the Protocol
alone, against every implementation. A new implementation (PostgreSQL) adds its name to
`IMPLEMENTATIONS` and a branch to `open_store`, and must pass every test here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pixelpost.store import SQLiteStore, Store

IMPLEMENTATIONS = ["sqlite"]

StoreOpener = Callable[..., Awaitable[Store]]


@pytest.fixture(params=IMPLEMENTATIONS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreOpener]:
    """Opens a new, empty store of the implementation under test (with `clock=` for
    its time), or one opened before again (`again=`), closed after the test."""
    opened: list[Store] = []

    async def open_one(
        *, clock: Callable[[], float] = time.time, again: int | None = None
    ) -> Store:
        """A new store; with `again`, the `again`-th opened store once more, as another
        process opens it."""
        assert request.param == "sqlite"
        number = len(opened) if again is None else again
        store = await SQLiteStore.open(tmp_path / f"s{number}.db", clock=clock)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
