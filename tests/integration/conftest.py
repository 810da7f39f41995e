"""Fixtures the integration tests share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pixelpost.app.runtime import start_intake
from pixelpost.config import Config
from pixelpost.store import SQLiteStore
from relay.frontdoor.server import RelayServer
from relay.intake.handler import IntakeHandler

IntakeStarter = Callable[[Config], Awaitable[tuple[RelayServer, IntakeHandler]]]


@pytest.fixture
async def start_intake_server(store: SQLiteStore) -> AsyncIterator[IntakeStarter]:
    """Starts intakes as the runtime does, recording in `store`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(config: Config) -> tuple[RelayServer, IntakeHandler]:
            started = await start_intake(config, stack, store, store)
            assert started is not None
            return started

        yield start
