"""AMQP destinations: each event published to a RabbitMQ topic exchange (durable,
declared when missing) as a persistent message, `message_id` the event's id (by which a
consumer tells an event sent twice, at least once, from a new one) and `type` its SES
eventType, confirmed by the broker. Published `mandatory`: an event no queue is bound
for comes back, and fails. aio-pika's errors stay in here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp.commands import Basic

from pipeline.destinations.base import DELIVERED, Outcome, unavailable
from pipeline.destinations.brokers import LEASE_MARGIN, Backoff, fill, scrub, secrets_in
from pixelpost.config import AmqpDestination
from pixelpost.core.values import describe_url
from pixelpost.store import Claimed

log = logging.getLogger(__name__)

AMQP_BATCH = 256
"""Events published at once; their confirms are awaited together."""
_NO_ROUTE = 312


class _Unreachable(Exception):
    """The broker, or the exchange on it, cannot be used now: no fault of any event's."""


class AmqpSender:
    """Publishes a batch's events at once on a channel with publisher confirms and
    waits for every confirm, over one connection kept open between batches."""

    concurrency = 1
    batch_size = AMQP_BATCH

    def __init__(self, destination: AmqpDestination, *, rng: random.Random | None = None) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        # A batch takes up to three timeouts to connect (the connection, the channel,
        # the exchange), one for the confirms.
        self.lease = 4 * destination.timeout + LEASE_MARGIN
        self._url = destination.url
        self._where = describe_url(destination.url)
        self._secrets = secrets_in(destination.url)
        self._exchange_name = destination.exchange
        self._routing_key = destination.routing_key
        self._timeout = destination.timeout
        self._backoff = Backoff(rng)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting = asyncio.Lock()

    async def close(self) -> None:
        await self._drop()

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        try:
            exchange = await self._connected()
        except _Unreachable as exc:
            return [unavailable(str(exc), self._backoff.pause())] * len(batch)
        outcomes = self._backoff.settle(
            await asyncio.gather(*(self._publish(exchange, c) for c in batch))
        )
        if any(outcome.unavailable for outcome in outcomes):
            # An unconfirmed publish or a lost channel: a new connection next time.
            await self._drop()
        return outcomes

    def routing_key(self, claimed: Claimed) -> str:
        """The routing key `claimed` is published with."""
        return fill(self._routing_key, claimed)

    async def _publish(self, exchange: AbstractExchange, claimed: Claimed) -> Outcome:
        routing_key = self.routing_key(claimed)
        message = aio_pika.Message(
            claimed.body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=claimed.event_id,
            type=claimed.event_type.value,
        )
        try:
            await exchange.publish(message, routing_key, mandatory=True, timeout=self._timeout)
        except aiormq.exceptions.PublishError as exc:
            frame = exc.frame
            if isinstance(frame, Basic.Return) and frame.reply_code == _NO_ROUTE:
                error = (
                    f"no queue is bound to exchange {self._exchange_name} "
                    f"for routing key {routing_key}"
                )
            else:
                error = f"exchange {self._exchange_name} returned it: {self._text(exc)}"
            return Outcome(delivered=False, error=error)
        except aiormq.exceptions.DeliveryError:
            error = f"the broker refused it (nack) on exchange {self._exchange_name}"
            return Outcome(delivered=False, error=error)
        except TimeoutError:
            return unavailable(f"no confirm from {self._where} within {self._timeout:g}s")
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError) as exc:
            return unavailable(f"lost the channel to {self._where}: {self._text(exc)}")
        except OSError as exc:
            return unavailable(f"lost the connection to {self._where}: {self._text(exc)}")
        return DELIVERED

    async def _connected(self) -> AbstractExchange:
        """The exchange on the open channel, connecting (and declaring it) first when
        there is none."""
        async with self._connecting:
            if (
                self._exchange is not None
                and self._channel is not None
                and not self._channel.is_closed
            ):
                return self._exchange
            await self._drop()
            try:
                connection = await aio_pika.connect(self._url, timeout=self._timeout)
            except Exception as exc:
                raise self._unreachable(exc) from exc
            try:
                channel = connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.initialize(timeout=self._timeout)
                exchange = await channel.declare_exchange(
                    self._exchange_name,
                    aio_pika.ExchangeType.TOPIC,
                    durable=True,
                    timeout=self._timeout,
                )
            except BaseException as exc:
                await connection.close()
                if isinstance(exc, Exception):
                    raise self._unreachable(exc) from exc
                raise
            log.info("destination %s: connected to %s", self.name, self._where)
            self._connection, self._channel, self._exchange = connection, channel, exchange
            return exchange

    def _unreachable(self, exc: Exception) -> _Unreachable:
        """What kept us from the broker, in words, without the URL's password."""
        if isinstance(exc, TimeoutError):
            return _Unreachable(f"no answer from {self._where} within {self._timeout:g}s")
        if isinstance(
            exc,
            aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError,
        ):
            return _Unreachable(f"{self._where} refused the login: {self._text(exc)}")
        if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
            return _Unreachable(
                f"exchange {self._exchange_name} on {self._where} is not a durable topic "
                f"exchange: {self._text(exc)}"
            )
        if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
            return _Unreachable(
                f"{self._where} refused us exchange {self._exchange_name}: {self._text(exc)}"
            )
        return _Unreachable(f"cannot connect to {self._where}: {self._text(exc)}")

    def _text(self, exc: BaseException) -> str:
        """An error's own words, never with the password in them."""
        if isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or type(exc).__name__
        return scrub(text, self._secrets)

    async def _drop(self) -> None:
        connection = self._connection
        self._connection, self._channel, self._exchange = None, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()
