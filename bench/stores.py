"""The stores the benchmarks run on, named by URL as `store.url` names them: opening
one, counting its rows, and throwaway PostgreSQL databases on the machine's server
(`PIXELPOST_BENCH_POSTGRESQL`, by default postgresql://127.0.0.1:5432/postgres), made
for a run and dropped after it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pixelpost.config import StoreConfig
from pixelpost.store import Store, open_store

SERVER_ENV = "PIXELPOST_BENCH_POSTGRESQL"
SERVER = os.environ.get(SERVER_ENV, "postgresql://127.0.0.1:5432/postgres")


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def store_config(url: str) -> StoreConfig:
    """`store.url` as the loader reads it (a sqlite:/// URL names an absolute path)."""
    if is_postgresql(url):
        return StoreConfig(url=url, kind="postgresql")
    return StoreConfig(url=url, kind="sqlite", sqlite_path=Path(url.removeprefix("sqlite:///")))


async def open_url(url: str) -> Store:
    """The store at `url`, created and migrated as pixelpost does."""
    return await open_store(store_config(url))


def database_url(name: str, server: str = SERVER) -> str:
    """The URL of database `name` on the server `server` names."""
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


async def count(url: str, sql: str, *args: object) -> int:
    """The first column of the first row of `sql` (with `?` or `$n` parameters, as
    the store's database takes them) on the store at `url`."""
    if is_postgresql(url):
        connection = await asyncpg.connect(url)
        try:
            return int(await connection.fetchval(sql, *args) or 0)
        finally:
            await connection.close()
    return await asyncio.to_thread(_count_sqlite, store_config(url).sqlite_path, sql, args)


def _count_sqlite(path: Path | None, sql: str, args: tuple[object, ...]) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        row = connection.execute(sql, args).fetchone()
    return int(row[0] or 0) if row else 0


async def admin(statement: str, server: str = SERVER) -> None:
    """Run `statement` on the server (CREATE DATABASE and the like)."""
    connection = await asyncpg.connect(server, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(
    prefix: str, *, template: str | None = None, server: str = SERVER
) -> str:
    """A new database (a copy of `template`, a file copy however large, when given):
    its name."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    copy = f" TEMPLATE {template}" if template else ""
    await admin(f"CREATE DATABASE {name}{copy}", server)
    return name


async def drop_database(name: str, *, server: str = SERVER) -> None:
    await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", server)


@contextlib.asynccontextmanager
async def throwaway_database(prefix: str, *, server: str = SERVER) -> AsyncIterator[str]:
    """A new database for the run, dropped after it: its name."""
    name = await create_database(prefix, server=server)
    try:
        yield name
    finally:
        await drop_database(name, server=server)


@contextlib.contextmanager
def throwaway_database_sync(prefix: str, *, server: str = SERVER) -> Iterator[str]:
    """`throwaway_database` for code that runs no event loop."""
    name = asyncio.run(create_database(prefix, server=server))
    try:
        yield name
    finally:
        asyncio.run(drop_database(name, server=server))
