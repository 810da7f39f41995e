"""The PostgreSQL store's connections: a pool, versioned migrations taken under an
advisory lock, transactions retried when PostgreSQL chose them as a deadlock's victim,
and advisory locks for the work that runs once across a cluster."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import asyncpg.pool

from pixelpost import __version__
from pixelpost.store.base import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_SIZE = 10
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a connection: a store that is down says so soon."""
COMMAND_TIMEOUT = 60.0
_RETRIES = 10
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)
"""What a connection or a statement raises when the store cannot do what was asked."""

MIGRATIONS_TABLE = "pixelpost_migrations"

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, of the pool or not."""


def describe(url: str) -> str:
    """The store's URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{user}{host}{port}{parts.path}"


def migrations() -> list[tuple[int, str, str]]:
    """The migrations, in order: (version, file name, SQL)."""
    folder = resources.files("pixelpost.store") / "migrations" / "postgresql" / "main"
    found = [
        (int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


def lock_key(schema: str, what: str) -> int:
    """An advisory lock's key (a signed 64-bit integer) for `what` in `schema`: two
    installations in one database never share one."""
    return zlib.crc32(f"pixelpost:{schema}:{what}".encode()) - 2**31


async def _migrated(connection: Connection, *, create: bool, where: str) -> int:
    """Apply what is missing (under an advisory lock, so that processes starting
    together migrate once); returns the version the store is at."""
    schema = await connection.fetchval("SELECT current_schema()")
    if schema is None:
        raise StoreError(f"store {where}: no schema to create tables in (search_path)")
    known = migrations()
    latest = known[-1][0]
    await connection.execute("SELECT pg_advisory_lock($1)", lock_key(schema, "migrate"))
    try:
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE)
        if not exists and not create:
            raise StoreError(
                f"no pixelpost store in {where} (store.url): run `pixelpost migrate` or start "
                "pixelpost with this configuration first"
            )
        if not exists:
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        current = await connection.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}"  # noqa: S608 (a constant)
        )
        if current > latest:
            raise StoreError(
                f"store {where} has schema version {current}, newer than pixelpost "
                f"{__version__} knows ({latest}): a newer pixelpost has used it; run that "
                "version or a later one (nothing was changed)"
            )
        for version, name, sql in known:
            if version <= current:
                continue
            log.info("store %s: applying migration %s", where, name)
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",  # noqa: S608
                    version,
                    name,
                )
        return latest
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", lock_key(schema, "migrate"))


async def schema_version(url: str, *, within: float) -> int | None:
    """The version of the store at `url` (None: no store there yet), read without
    changing anything. Raises what connecting raises (`ERRORS`)."""
    connection = await asyncpg.connect(url, timeout=within)
    try:
        if not await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE):
            return None
        return int(
            await connection.fetchval(f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}")  # noqa: S608 (a constant)
        )
    finally:
        await connection.close(timeout=within)


def latest_version() -> int:
    """The version this pixelpost migrates a store to."""
    return migrations()[-1][0]


def row_count(status: str) -> int:
    """The row count of a command's status ("UPDATE 3", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


class Database:
    """The pool of one PostgreSQL store, and how work runs on it."""

    def __init__(
        self, *, url: str, pool: asyncpg.Pool, schema: str, clock: Callable[[], float]
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.pool = pool
        self.schema = schema
        self.clock = clock
        self.shard = random.randrange(64)  # noqa: S311 (spreads counters, not a secret)
        """This process's shard of the counters (see the migration)."""
        self._closed = False

    @classmethod
    async def open(
        cls, url: str, *, create: bool = True, clock: Callable[[], float] = time.time
    ) -> Database:
        """Connect, creating and migrating the store as needed (with `create` false, a
        database without a store is an error)."""
        where = describe(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (*ERRORS, ValueError) as exc:
            raise StoreError(f"cannot open the store {where}: {exc}") from exc
        try:
            async with pool.acquire() as connection:
                await _migrated(connection, create=create, where=where)
                schema = await connection.fetchval("SELECT current_schema()")
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, ERRORS):
                raise StoreError(f"cannot open the store {where}: {exc}") from exc
            raise
        return cls(url=url, pool=pool, schema=schema, clock=clock)

    def error(self, exc: BaseException, what: str = "") -> StoreError:
        return StoreError(f"store {self.where}: {what}{exc or type(exc).__name__}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection of the pool, with the store's errors as StoreError."""
        self._check_open()
        try:
            async with self.pool.acquire() as connection:
                yield connection
        except ERRORS as exc:
            raise self.error(exc) from exc

    async def transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` in a transaction; run again (a few times) when PostgreSQL rolled it
        back as a deadlock's victim or for serialization."""
        self._check_open()
        for attempt in range(_RETRIES):
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    return await work(connection)
            except _RETRIED as exc:
                if attempt == _RETRIES - 1:
                    raise self.error(exc) from exc
                await asyncio.sleep(0.01 * (attempt + 1) * random.random())  # noqa: S311
            except ERRORS as exc:
                raise self.error(exc) from exc
        raise AssertionError("unreachable")

    async def once(self, what: str, work: Callable[[Connection], Awaitable[T]], idle: T) -> T:
        """Run `work` in a transaction that holds the cluster-wide advisory lock `what`;
        when another process holds it, do nothing and return `idle` (that process is
        doing the work)."""
        key = lock_key(self.schema, what)

        async def locked(connection: Connection) -> T:
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", key):
                return idle
            return await work(connection)

        return await self.transaction(locked)

    async def ping(self, *, within: float) -> None:
        self._check_open()
        try:
            async with asyncio.timeout(within):
                async with self.pool.acquire() as connection:
                    if await connection.fetchval("SELECT pg_is_in_recovery()"):
                        raise StoreError(f"store {self.where} is a read-only standby")
        except ERRORS as exc:
            raise self.error(exc) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except (TimeoutError, *ERRORS):
            self.pool.terminate()
