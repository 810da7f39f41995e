"""The message brokers the broker destinations are tested against, on their usual ports
on 127.0.0.1 (CI starts them, as a developer does): NATS with JetStream, Redis and
RabbitMQ. Each `Broker` names a stream, key or exchange of its own, reads back what was
published there as a consumer would, and removes it afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol, cast

import aio_pika
import nats
import nats.js.errors
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from redis.asyncio import Redis

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def unique(prefix: str = "pixelpost-test") -> str:
    """A name no other test, nor another run at the same time, uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, kw_only=True)
class Received:
    """One message as its consumer read it."""

    id: str
    """The event's id as the broker carries it: Nats-Msg-Id, the `id` field, message_id."""
    route: str
    """The subject, the stream's key, or the routing key."""
    body: bytes
    properties: dict[str, str] = field(default_factory=dict)
    """Headers, the entry's field names, or the message's properties."""


class Broker(Protocol):
    kind: str

    def section(self, url: str | None = None) -> str:
        """The destination's lines of the configuration (`type`, `url`, its names)."""
        ...

    async def received(self) -> list[Received]:
        """Every message published so far, in order."""
        ...

    async def cleanup(self) -> None: ...


class NatsBroker:
    """A stream of its own (left for the sender to create) and subjects of its own."""

    kind = "nats"

    def __init__(self) -> None:
        self.stream = unique()
        self.prefix = self.stream
        self.subject = f"{self.prefix}.{{config_set}}.{{event_type}}"

    def section(self, url: str | None = None) -> str:
        return (
            f'type = "nats"\nurl = "{url or NATS_URL}"\n'
            f'stream = "{self.stream}"\nsubject = "{self.subject}"\n'
        )

    async def received(self) -> list[Received]:
        client = await nats.connect(NATS_URL)
        try:
            js = client.jetstream()
            try:
                count = (await js.stream_info(self.stream)).state.messages
            except nats.js.errors.NotFoundError:
                return []
            if not count:
                return []
            subscription = await js.pull_subscribe(f"{self.prefix}.>", stream=self.stream)
            messages = await subscription.fetch(count, timeout=5)
            found = []
            for message in messages:
                headers = dict(message.headers or {})
                found.append(
                    Received(
                        id=headers.get("Nats-Msg-Id", ""),
                        route=message.subject,
                        body=message.data,
                        properties=headers,
                    )
                )
                await message.ack()
            await subscription.unsubscribe()
            return found
        finally:
            await client.close()

    async def cleanup(self) -> None:
        client = await nats.connect(NATS_URL)
        try:
            await client.jetstream().delete_stream(self.stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await client.close()


class RedisBroker:
    """A stream key of its own."""

    kind = "redis"

    def __init__(self, *, maxlen: int = 0) -> None:
        self.stream = unique("pixelpost-test:events")
        self.maxlen = maxlen
        self.client = Redis.from_url(REDIS_URL)

    def section(self, url: str | None = None) -> str:
        return (
            f'type = "redis"\nurl = "{url or REDIS_URL}"\n'
            f'stream = "{self.stream}"\nmaxlen = {self.maxlen}\n'
        )

    async def received(self) -> list[Received]:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self.client.xrange(self.stream, "-", "+"),
        )
        return [
            Received(
                id=fields[b"id"].decode(),
                route=self.stream,
                body=fields[b"event"],
                properties={name.decode(): "" for name in fields},
            )
            for _, fields in entries
        ]

    async def node_size(self) -> int:
        """The most entries a node of a stream holds: `MAXLEN ~` drops whole nodes."""
        found = await self.client.config_get("stream-node-max-entries")
        return int(str(found["stream-node-max-entries"]))

    async def cleanup(self) -> None:
        await self.client.delete(self.stream)
        await self.client.aclose()


class AmqpBroker:
    """An exchange of its own and, once `bind` ran, a queue bound to it for every
    routing key, consumed into `messages`."""

    kind = "amqp"

    def __init__(self) -> None:
        self.exchange = unique()
        self.messages: list[Received] = []
        self._connection: AbstractConnection | None = None
        self._queue: AbstractQueue | None = None

    def section(self, url: str | None = None) -> str:
        return f'type = "amqp"\nurl = "{url or AMQP_URL}"\nexchange = "{self.exchange}"\n'

    async def bind(self) -> None:
        """Declare the exchange as the sender would, and a queue taking all of it."""
        self._connection = await aio_pika.connect(AMQP_URL)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(exchange, "#")
        await self._queue.consume(self._take)

    async def _take(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.messages.append(
                Received(
                    id=message.message_id or "",
                    route=message.routing_key or "",
                    body=message.body,
                    properties={
                        "content_type": message.content_type or "",
                        "type": message.type or "",
                        "delivery_mode": str(int(message.delivery_mode or 0)),
                    },
                )
            )

    async def received(self) -> list[Received]:
        return list(self.messages)

    async def is_durable_topic(self) -> bool:
        """Whether the exchange exists as a durable topic exchange: declaring it as one
        again is refused (and the channel closed) when it is anything else."""
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.declare_exchange(self.exchange, passive=True)
            await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            return True
        except aio_pika.exceptions.ChannelClosed:
            return False
        finally:
            await connection.close()

    async def cleanup(self) -> None:
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.exchange_delete(self.exchange)
        finally:
            await connection.close()
        if self._connection is not None:
            await self._connection.close()


def make_broker(kind: str) -> NatsBroker | RedisBroker | AmqpBroker:
    if kind == "nats":
        return NatsBroker()
    if kind == "redis":
        return RedisBroker()
    return AmqpBroker()
