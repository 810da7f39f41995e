"""The machine's PostgreSQL, for the tests that run the store on it: a database for the
test run (dropped after it), and a schema of it for each store a test opens, so that
tests never see each other's rows.

`PIXELPOST_TEST_POSTGRESQL` names the server (a database on it to connect to first; by
default the `test` database at 127.0.0.1:5432). Without a server there, the PostgreSQL
tests skip, unless `PIXELPOST_REQUIRE_POSTGRESQL` is set, as .ci/run sets it: then they
fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SERVER_ENV = "PIXELPOST_TEST_POSTGRESQL"
REQUIRE_ENV = "PIXELPOST_REQUIRE_POSTGRESQL"
SERVER = os.environ.get(SERVER_ENV, "postgresql://127.0.0.1:5432/test")


def _with_database(url: str, database: str, query: str = "") -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", query, ""))


@dataclass(frozen=True)
class RunDatabase:
    """The test run's database."""

    url: str

    async def new_schema(self) -> str:
        """A new, empty schema of the run's database: the URL of a store in it."""
        name = f"s_{secrets.token_hex(6)}"
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f"CREATE SCHEMA {name}")
        finally:
            await connection.close()
        return self.schema_url(name)

    def schema_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return _with_database(self.url, parts.path.lstrip("/"), f"search_path={name}")


async def _admin_async(statement: str) -> None:
    connection = await asyncpg.connect(SERVER, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _admin(statement: str) -> None:
    """Run `statement` on the server, from any thread (the fixture may be set up from
    within a test's event loop)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, _admin_async(statement)).result()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[RunDatabase]:
    """A database of the test run on the machine's PostgreSQL, dropped after the run."""
    name = f"pixelpost_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(
                f"no PostgreSQL at {SERVER} ({SERVER_ENV}), and {REQUIRE_ENV} is set: {exc}"
            )
        pytest.skip(f"no PostgreSQL at {SERVER} ({SERVER_ENV}): {exc}")
    try:
        yield RunDatabase(url=_with_database(SERVER, name))
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
