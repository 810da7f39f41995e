"""Fixtures shared by the integration and end-to-end tests: an upstream sink, a relay
started on port 0, and configuration written the way users write it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import sqlite3
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP
from hypothesis import settings

from pixelpost.app.runtime import start_relay as start_relay_services
from pixelpost.config import Config, HostPort, TrackerConfig, parse_config_text
from pixelpost.core.event_types import EventType
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key, signing_keys
from pixelpost.store import Route, SQLiteStore, Store
from relay.frontdoor.server import RelayServer
from relay.outbound.queue import DeliveryQueue
from relay.outbound.spool import Spool
from tests.postgres import RunDatabase, postgresql  # noqa: F401 (a fixture, for every test)
from tests.sink import SinkHandler
from tracker.server import TrackerServer

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("PIXELPOST_HYPOTHESIS", "repeatable"))
"""The property tests try the same examples on every run, so that a run passes or fails
for what the code does, not for what this run's random examples happened to find;
`PIXELPOST_HYPOTHESIS=explore` draws new ones (and stores what fails in .hypothesis/)."""

CORPUS_BESIDE = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
"""Real templates and messages from other projects, beside this checkout when it is
there; the tests' own fixtures are in `FIXTURES`."""
FIXTURES = Path(__file__).resolve().parent / "fixtures"
"""HTML templates and MIME messages the project wrote for its tests."""
CORPUS_ENV = "PIXELPOST_CORPUS"
"""Names the corpus (`html/*.html`, `mime/*.eml`); when it is set, as .ci/run sets it,
the corpus tests require it and fail rather than skip."""


def config_text(
    upstream_url: str, tmp_path: Path, *, relay: str = "", upstream: str = "", tracker: str = ""
) -> str:
    """A configuration like a user's: two configuration sets, a file destination, and
    the relay and tracker on free ports; deferred mail is retried after 200 ms. `relay`,
    `upstream` and `tracker` add lines to those tables."""
    return f"""
default_config_set = "default"

[relay]
listen = "127.0.0.1:0"
hostname = "relay.test"
spool = "{tmp_path / "spool"}"
retry_delays = ["200ms"]
{relay}

[upstream]
url = "{upstream_url}"
timeout = "5s"
{upstream}

[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example"
{tracker}

[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"

[signing]
key_file = "{tmp_path / "signing.key"}"

[config_sets.default]
destinations = ["archive"]

[config_sets.marketing]
destinations = ["archive"]

[config_sets.untracked]
open_tracking = false
click_tracking = false

[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
"""


def make_config(
    upstream_url: str, tmp_path: Path, *, relay: str = "", upstream: str = ""
) -> Config:
    return parse_config_text(
        config_text(upstream_url, tmp_path, relay=relay, upstream=upstream), environ={}
    )


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


SinkStarter = Callable[..., Awaitable[tuple[SinkHandler, int]]]


@pytest.fixture
async def start_sink() -> AsyncIterator[SinkStarter]:
    """Starts upstream sinks on 127.0.0.1 (port 0 unless told): plain, with STARTTLS offered
    (`starttls=context`) or with implicit TLS (`implicit_tls=context`)."""
    servers: list[asyncio.Server] = []

    async def start(
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        smtputf8: bool = True,
        port: int = 0,
    ) -> tuple[SinkHandler, int]:
        handler = SinkHandler()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                handler,
                hostname="sink.test",
                enable_SMTPUTF8=smtputf8,
                tls_context=starttls,
                loop=loop,
            ),
            "127.0.0.1",
            port,
            ssl=implicit_tls,
        )
        servers.append(server)
        return handler, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def sink(start_sink: SinkStarter) -> tuple[SinkHandler, int]:
    return await start_sink()


def codec_for(config: Config) -> TokenCodec:
    keys = signing_keys(config.signing.keys, config.signing.key_file)
    return TokenCodec([decode_signing_key(key) for key in keys])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """The real SQLite store, in the test's directory."""
    opened = await SQLiteStore.open(tmp_path / "pixelpost.db")
    yield opened
    await opened.close()


CONFIG_SETS = ("default", "marketing", "untracked")


async def published(store: Store) -> list[dict[str, Any]]:
    """Every event recorded so far about messages of the test configuration sets, as
    the SES JSON a destination would get."""
    await store.route(
        [
            Route(config_set=name, event_type=t, destination="test")
            for name in CONFIG_SETS
            for t in EventType
        ]
    )
    claimed = await store.claim("test", limit=10_000, lease=3600)
    return [json.loads(c.body) for c in claimed]


def recorded(store: SQLiteStore) -> list[tuple[str, str, dict[str, Any]]]:
    """Every event in the store's file: (type, message id, the type's own object)."""
    with sqlite3.connect(store.path) as connection:
        rows = connection.execute("SELECT type, message_id, detail FROM events ORDER BY seq")
        return [(kind, message_id, json.loads(detail)) for kind, message_id, detail in rows]


@dataclass
class RunningRelay:
    """A relay as `pixelpost relay` runs it: listener, spool and delivery queue."""

    server: RelayServer
    queue: DeliveryQueue
    spool: Spool
    _stack: contextlib.AsyncExitStack

    @property
    def address(self) -> HostPort:
        return self.server.address

    def idle(self) -> bool:
        """Whether the relay is done with every message it accepted: its spool is empty
        and its queue has nothing scheduled or in flight. A delivery holds its spool
        file until it is over, and a bounce notification is spooled before its
        message's file goes, so from then on nothing more leaves the relay until it
        accepts a new message: a test that shows nothing more arrives (no retry, no
        second copy) waits for this rather than for some time."""
        return not self.spool.ids() and self.queue.depth == 0

    async def stop(self) -> None:
        """Stop as on SIGTERM: the listener, then the deliveries."""
        await self._stack.aclose()


async def events_of(store: SQLiteStore, **expected: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The store's events (as `recorded` gives them) once it holds at least the expected
    number of each type, by configuration name (`delivery=2, delivery_delay=1`); waits
    up to 10 s."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        events = recorded(store)
        counts = {kind: sum(1 for e in events if e[0] == kind) for kind in expected}
        if all(counts[kind] >= n for kind, n in expected.items()):
            return events
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected events {expected}, got {[e[0] for e in events]}")
        await asyncio.sleep(0.02)


T = TypeVar("T")


async def until(
    condition: Callable[[], T | Awaitable[T]], what: str, *, within: float = 10.0
) -> T:
    """Wait for `condition` (a function, or an async one) to return something true,
    looking every 10 ms for up to `within` seconds; return what it returned."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = condition()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return cast(T, found)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.01)


RelayStarter = Callable[[Config], Awaitable[RunningRelay]]


@pytest.fixture
async def start_relay(store: SQLiteStore) -> AsyncIterator[RelayStarter]:
    """Starts relays on 127.0.0.1 port 0 as the runtime does, recording in `store`."""
    relays: list[RunningRelay] = []

    async def start(config: Config) -> RunningRelay:
        stack = contextlib.AsyncExitStack()
        try:
            server, queue, _ = await start_relay_services(
                config, stack, store, suppression=store, copies=store
            )
        except BaseException:
            await stack.aclose()
            raise
        relay = RunningRelay(server=server, queue=queue, spool=queue.spool, _stack=stack)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.stop()


AppServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_app() -> AsyncIterator[AppServer]:
    """Serves aiohttp applications as the tracker does, on 127.0.0.1 port 0, with the
    `[tracker]` settings given as keywords (`header_timeout=0.3`); returns each one's
    base URL. Stopped after the test."""
    servers: list[TrackerServer] = []

    async def serve(app: web.Application, **settings: Any) -> str:
        config = TrackerConfig(
            listen=HostPort(host="127.0.0.1", port=0),
            public_url="http://127.0.0.1",
            trusted_proxies=(),
        )
        server = TrackerServer(app=app, config=dataclasses.replace(config, **settings))
        await server.start()
        servers.append(server)
        return f"http://{server.address}"

    yield serve
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the tests' requests to the servers they start."""
    async with aiohttp.ClientSession() as session:
        yield session


def find_corpus() -> Path | None:
    """The larger corpus, run on top of the project's own fixtures: the folder
    PIXELPOST_CORPUS names (required then), else `../shared/corpus` when it is beside
    this checkout, else None."""
    named = os.environ.get(CORPUS_ENV)
    if named:
        path = Path(named)
        if not (path / "html").is_dir() or not (path / "mime").is_dir():
            raise AssertionError(
                f"the test corpus is missing: {CORPUS_ENV}={named} has no html/ and mime/"
            )
        return path
    return CORPUS_BESIDE if CORPUS_BESIDE.is_dir() else None


@pytest.fixture
def corpus() -> Path:
    """The larger corpus (`find_corpus`); a clone on its own skips the tests using it."""
    path = find_corpus()
    if path is None:
        pytest.skip(f"no corpus: set {CORPUS_ENV}, or put it at {CORPUS_BESIDE}")
    return path


@pytest.fixture
def corpus_or_none() -> Path | None:
    """The larger corpus for tests that run on the project's own fixtures too, or None."""
    return find_corpus()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`store.url` for a new, empty store: a SQLite file, then a schema of the test run's
    PostgreSQL database (tests/postgres.py): a test that takes it runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pixelpost.db'}"
    database: RunDatabase = request.getfixturevalue("postgresql")
    return await database.new_schema()
