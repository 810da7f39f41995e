"""Fixtures shared by the integration and end-to-end tests: an upstream sink, a relay
started on port 0, and configuration written the way users write it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import SMTP

from pixelpost.config import Config, parse_config_text
from pixelpost.events import Event
from pixelpost.keys import decode_signing_key, signing_keys
from pixelpost.tokens import TokenCodec
from relay.access import AccessPolicy
from relay.delivery import Delivery, ForwardingDelivery
from relay.handler import RelayHandler
from relay.server import RelayServer
from relay.upstream import open_transport
from tests.sink import SinkHandler

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def config_text(upstream_url: str, tmp_path: Path, *, relay: str = "", upstream: str = "") -> str:
    """A configuration like a user's: two configuration sets, a file destination, and
    the relay and tracker on free ports. `relay` and `upstream` add lines to those
    tables."""
    return f"""
default_config_set = "default"

[relay]
listen = "127.0.0.1:0"
hostname = "relay.test"
spool = "{tmp_path / "spool"}"
{relay}

[upstream]
url = "{upstream_url}"
timeout = "5s"
{upstream}

[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example"

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
    """Starts upstream sinks on 127.0.0.1 port 0: plain, with STARTTLS offered
    (`starttls=context`) or with implicit TLS (`implicit_tls=context`)."""
    servers: list[asyncio.Server] = []

    async def start(
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        smtputf8: bool = True,
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
            0,
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


class RecordingEvents:
    """Keeps what the relay publishes, in memory."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


RelayStarter = Callable[..., Awaitable[RelayServer]]


@pytest.fixture
async def start_relay(events: RecordingEvents) -> AsyncIterator[RelayStarter]:
    """Starts relays on 127.0.0.1 port 0 that forward to their configured upstream."""
    servers: list[RelayServer] = []

    async def start(config: Config, *, delivery: Delivery | None = None) -> RelayServer:
        if delivery is None:
            transport = open_transport(config.upstream, local_hostname=config.relay.hostname)
            delivery = ForwardingDelivery(transport=transport)
        handler = RelayHandler(
            config=config,
            access=AccessPolicy(allow_networks=config.relay.allow_networks),
            delivery=delivery,
            codec=codec_for(config),
            events=events,
        )
        server = RelayServer(config=config.relay, handler=handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=1)


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        raise AssertionError(f"the test corpus is missing: {CORPUS}")
    return CORPUS
