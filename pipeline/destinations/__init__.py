"""How events reach each kind of destination: one module per kind, each a `Sender`
(`base`), and `make_senders`, which picks the one each configured destination names.

    webhook   one POST per event, signed as Standard Webhooks asks
    sns       one POST per event, as Amazon SNS delivers to an HTTP(S) subscription
    file      JSON lines, appended and fsync'd, a batch at a time
    nats      JetStream publishes, acknowledged, deduplicated by Nats-Msg-Id
    redis     XADD to a stream, a pipeline per batch
    amqp      RabbitMQ publishes with publisher confirms

A new kind of destination is a module here, a record in pixelpost.config.records, its
section in the loader, and a branch in `make_sender`. The broker clients are imported
only where a destination of their kind is configured.
"""

from __future__ import annotations

import aiohttp

from pipeline.destinations.base import DELIVERED, Outcome, Sender, unavailable
from pipeline.destinations.file import FileSender
from pipeline.destinations.webhook import WebhookSender, sign
from pixelpost.config import (
    AmqpDestination,
    Config,
    Destination,
    FileDestination,
    NatsDestination,
    RedisDestination,
    SnsDestination,
    WebhookDestination,
)
from pixelpost.store import Store

__all__ = [
    "DELIVERED",
    "FileSender",
    "Outcome",
    "Sender",
    "WebhookSender",
    "make_sender",
    "make_senders",
    "sign",
    "unavailable",
]


def make_sender(
    destination: Destination, *, config: Config, session: aiohttp.ClientSession, store: Store
) -> Sender:
    """The sender for a configured destination."""
    # The branches import their modules: a broker's client loads only where it is used.
    if isinstance(destination, WebhookDestination):
        return WebhookSender(destination, session)
    if isinstance(destination, FileDestination):
        return FileSender(destination)
    if isinstance(destination, SnsDestination):
        from pipeline.destinations.sns import SnsSender  # noqa: PLC0415

        return SnsSender(destination, config=config, session=session, store=store)
    if isinstance(destination, NatsDestination):
        from pipeline.destinations.nats import NatsSender  # noqa: PLC0415

        return NatsSender(destination)
    if isinstance(destination, RedisDestination):
        from pipeline.destinations.redis import RedisSender  # noqa: PLC0415

        return RedisSender(destination)
    if isinstance(destination, AmqpDestination):
        from pipeline.destinations.amqp import AmqpSender  # noqa: PLC0415

        return AmqpSender(destination)
    raise TypeError(f"no sender for {type(destination).__name__}")


def make_senders(
    config: Config, *, session: aiohttp.ClientSession, store: Store
) -> dict[str, Sender]:
    """A sender for each configured destination, by name."""
    return {
        name: make_sender(destination, config=config, session=session, store=store)
        for name, destination in config.destinations.items()
    }
