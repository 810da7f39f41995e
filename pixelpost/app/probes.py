"""`check-config --connect`: reach what a configuration names (the upstream, each
webhook and SNS endpoint, each broker, the store) as pixelpost would, change nothing,
and say how it went."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from pipeline.destinations.brokers import scrub, secrets_in
from pixelpost.config import (
    AmqpDestination,
    BrokerDestination,
    Config,
    NatsDestination,
    RedisDestination,
    SnsDestination,
    WebhookDestination,
)
from pixelpost.core.values import describe_url
from pixelpost.errors import DeliveryError
from pixelpost.files import blocking_folder
from pixelpost.store.postgresql import database as postgresql
from pixelpost.store.sqlite.schema import migrations
from pixelpost.store.sqlite.store import outbox_path
from relay.outbound.upstream import open_transport


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    """What one attempt found."""

    key: str
    """The configuration key that names what was tried."""
    ok: bool
    detail: str


def _shown(url: str) -> str:
    """A URL without its path, query or credentials, which may hold secrets."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


async def _upstream(config: Config, seconds: float) -> Probe:
    transport = open_transport(config.upstream, local_hostname=config.relay.hostname, pool_size=1)
    try:
        detail = await asyncio.wait_for(transport.check(), seconds)
    except DeliveryError as exc:
        return Probe(key="upstream.url", ok=False, detail=f"{transport.describe()}: {exc}")
    except TimeoutError:
        return Probe(
            key="upstream.url",
            ok=False,
            detail=f"{transport.describe()}: no answer within {seconds:g}s",
        )
    finally:
        await transport.close()
    return Probe(key="upstream.url", ok=True, detail=f"{transport.describe()}: {detail}")


async def _endpoint(
    session: aiohttp.ClientSession,
    destination: WebhookDestination | SnsDestination,
    seconds: float,
) -> Probe:
    key = f"destinations.{destination.name}.url"
    shown = _shown(destination.url)
    try:
        # HEAD changes nothing at the endpoint; any answer at all shows it is there.
        async with session.head(
            destination.url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            status = response.status
    except TimeoutError:
        return Probe(key=key, ok=False, detail=f"{shown}: no answer within {seconds:g}s")
    except aiohttp.ClientError as exc:
        return Probe(key=key, ok=False, detail=f"{shown}: {exc or type(exc).__name__}")
    return Probe(key=key, ok=True, detail=f"{shown}: answered HTTP {status} to HEAD")


async def _connect(destination: BrokerDestination, seconds: float) -> str:
    """Connect to the broker and let go again, declaring nothing; what it said."""
    # Each client is imported here: a configuration without its broker never loads it.
    if isinstance(destination, NatsDestination):
        import nats  # noqa: PLC0415
        import nats.errors  # noqa: PLC0415

        heard: list[str] = []

        async def quietly(exc: Exception) -> None:  # nats-py would log a traceback
            heard.append(str(exc) or type(exc).__name__)

        try:
            client = await nats.connect(
                destination.url,
                connect_timeout=max(1, round(seconds)),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=quietly,
            )
        except nats.errors.NoServersError as exc:
            raise ConnectionError(heard[-1] if heard else str(exc)) from None
        version = client.connected_server_version
        await client.close()
        return f"NATS {version} answered"
    if isinstance(destination, RedisDestination):
        from redis.asyncio import Redis  # noqa: PLC0415

        redis = Redis.from_url(destination.url, socket_connect_timeout=seconds)
        try:
            await redis.ping()
        finally:
            await redis.aclose()
        return "Redis answered PING"
    import aio_pika  # noqa: PLC0415

    connection = await aio_pika.connect(destination.url, timeout=seconds)
    await connection.close()
    return "RabbitMQ took the login"


async def _broker(destination: BrokerDestination, seconds: float) -> Probe:
    key = f"destinations.{destination.name}.url"
    where = describe_url(destination.url)
    try:
        async with asyncio.timeout(seconds):
            detail = await _connect(destination, seconds)
    except TimeoutError:
        return Probe(key=key, ok=False, detail=f"{where}: no answer within {seconds:g}s")
    except Exception as exc:  # each client's own errors, all said the same way
        text = scrub(str(exc) or type(exc).__name__, secrets_in(destination.url))
        return Probe(key=key, ok=False, detail=f"{where}: {text}")
    return Probe(key=key, ok=True, detail=f"{where}: {detail}")


def _sqlite_version(path: Path) -> int:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


async def _postgresql(config: Config, seconds: float) -> Probe:
    """The PostgreSQL store reached: its schema against this version's (nothing is
    created or migrated)."""
    where = postgresql.describe(config.store.url)
    try:
        version = await postgresql.schema_version(config.store.url, within=seconds)
    except (*postgresql.ERRORS, ValueError) as exc:
        return Probe(key="store.url", ok=False, detail=f"{where}: {exc}")
    if version is None:
        return Probe(
            key="store.url",
            ok=True,
            detail=f"{where} answers; no store there yet: made on first start "
            "(or by `pixelpost migrate`)",
        )
    latest = postgresql.latest_version()
    if version > latest:
        return Probe(
            key="store.url",
            ok=False,
            detail=f"{where} has schema version {version}, newer than this pixelpost's ({latest})",
        )
    behind = f" (migrated to {latest} on first start)" if version < latest else ""
    return Probe(
        key="store.url", ok=True, detail=f"{where} opens, schema version {version}{behind}"
    )


def _store(config: Config) -> Probe:
    """The store opened read-only: its schema against this version's (nothing is
    created or migrated)."""
    assert config.store.sqlite_path is not None
    path = config.store.sqlite_path
    if not path.exists():
        if (blocking := blocking_folder(path.parent)) is not None:
            return Probe(
                key="store.url",
                ok=False,
                detail=f"no store at {path}, and {blocking} is not a writable folder",
            )
        return Probe(
            key="store.url", ok=True, detail=f"no store at {path} yet: made on first start"
        )
    problems = []
    for schema, file in (("log", path), ("outbox", outbox_path(path))):
        if not file.exists():
            continue
        try:
            version = _sqlite_version(file)
        except sqlite3.Error as exc:
            return Probe(key="store.url", ok=False, detail=f"{file}: {exc}")
        latest = max((number for number, _, _ in migrations(schema)), default=0)
        if version > latest:
            problems.append(f"{file} has schema version {version}, newer than this pixelpost's")
    if problems:
        return Probe(key="store.url", ok=False, detail="; ".join(problems))
    return Probe(key="store.url", ok=True, detail=f"{path} opens")


async def probe(config: Config, *, seconds: float) -> list[Probe]:
    """Try the upstream, every webhook and SNS endpoint, every broker and the store,
    side by side."""
    endpoints = [
        d
        for d in config.destinations.values()
        if isinstance(d, WebhookDestination | SnsDestination)
    ]
    brokers = [
        d
        for d in config.destinations.values()
        if isinstance(d, NatsDestination | RedisDestination | AmqpDestination)
    ]
    async with aiohttp.ClientSession() as session:
        found = await asyncio.gather(
            _upstream(config, seconds),
            *(_endpoint(session, d, seconds) for d in endpoints),
            *(_broker(d, seconds) for d in brokers),
        )
    if config.store.kind == "postgresql":
        return [*found, await _postgresql(config, seconds)]
    return [*found, await asyncio.to_thread(_store, config)]
