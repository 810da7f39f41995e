"""`PostgreSQLStore`: every role of the store (pixelpost.store.base) on one pool."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

import asyncpg

from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import CONNECT_TIMEOUT, ERRORS, Connection, Database
from pixelpost.store.postgresql.log import PostgreSQLMessageLog
from pixelpost.store.postgresql.outbox import PostgreSQLOutbox
from pixelpost.store.postgresql.retention import PostgreSQLRetention
from pixelpost.store.postgresql.statistics import PostgreSQLStatistics
from pixelpost.store.postgresql.subscriptions import PostgreSQLSnsSubscriptions
from pixelpost.store.postgresql.suppression import PostgreSQLSuppressionList
from pixelpost.store.postgresql.writer import PostgreSQLGroupCommit

log = logging.getLogger(__name__)

LISTEN_RETRY = 5.0
"""Seconds between attempts to listen again once the listening connection is lost."""


def _set(event: asyncio.Event, _connection: object) -> None:
    event.set()


class PostgreSQLStore(
    PostgreSQLMessageLog,
    PostgreSQLOutbox,
    PostgreSQLStatistics,
    PostgreSQLRetention,
    PostgreSQLSuppressionList,
    PostgreSQLSnsSubscriptions,
):
    """The store in one PostgreSQL database, for many processes on many machines."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._writer = PostgreSQLGroupCommit(db, clock=db.clock)
        self._listener: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, *, create: bool = True, clock: Callable[[], float] = time.time
    ) -> PostgreSQLStore:
        """Connect to the store at `url`, creating and migrating it as needed (with
        `create` false, a database without a store is an error)."""
        return cls(await Database.open(url, create=create, clock=clock))

    @property
    def where(self) -> str:
        """The store's URL, without its password."""
        return self._db.where

    async def listen(
        self, *, events: Callable[[], None], deliveries: Callable[[str], None]
    ) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(
                self._listen(events, deliveries), name="store: listen"
            )

    async def _listen(self, events: Callable[[], None], deliveries: Callable[[str], None]) -> None:
        """Hold a connection that LISTENs on the store's channels; connect again when it
        is lost (the dispatcher polls meanwhile)."""

        def heard(_connection: object, _pid: int, channel: str, payload: object) -> None:
            if channel == queries.EVENTS_CHANNEL:
                events()
            else:
                deliveries(str(payload))

        while True:
            connection: Connection | None = None
            try:
                connection = await asyncpg.connect(self._db.url, timeout=CONNECT_TIMEOUT)
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(_set, lost))
                await connection.add_listener(queries.EVENTS_CHANNEL, heard)
                await connection.add_listener(queries.OUTBOX_CHANNEL, heard)
                events()  # what was recorded while nobody listened
                await lost.wait()
                log.warning("store %s: the connection that listens was lost", self.where)
            except ERRORS as exc:
                log.warning("store %s: cannot listen for new events: %s", self.where, exc)
            finally:
                if connection is not None:
                    with contextlib.suppress(*ERRORS):
                        await connection.close(timeout=1)
            await asyncio.sleep(LISTEN_RETRY)

    async def ping(self, *, within: float) -> None:
        await self._db.ping(within=within)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._writer.close()
        await self._db.close()
