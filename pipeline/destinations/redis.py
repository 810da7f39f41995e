"""Redis destinations: each event appended to a stream with `XADD`, fields `id` (the
event's id, by which a reader tells an event sent twice, at least once, from a new one)
and `event` (the SES JSON), the stream trimmed to about `maxlen` entries; a batch is
one pipeline, one round trip. redis-py's errors stay in here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pipeline.destinations.base import DELIVERED, Outcome, unavailable
from pipeline.destinations.brokers import LEASE_MARGIN, Backoff, scrub, secrets_in
from pixelpost.config import RedisDestination
from pixelpost.core.values import describe_url
from pixelpost.store import Claimed

log = logging.getLogger(__name__)

REDIS_BATCH = 500
"""Events appended in one pipeline."""
SERVER_STATES = (
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "LOADING",
    "BUSY",
    "MISCONF",
    "NOREPLICAS",
)
"""Error replies that tell of the server's state, not of the entry: an outage, which
counts no attempt."""


class RedisSender:
    """Appends a batch's events to a Redis stream in one pipeline, over a connection
    kept open between batches."""

    concurrency = 1
    batch_size = REDIS_BATCH

    def __init__(self, destination: RedisDestination, *, rng: random.Random | None = None) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        # A batch takes one timeout to connect, one for the pipeline's answers.
        self.lease = 2 * destination.timeout + LEASE_MARGIN
        self._url = destination.url
        self._where = describe_url(destination.url)
        self._secrets = secrets_in(destination.url)
        self._stream = destination.stream
        self._maxlen = destination.maxlen or None
        self._timeout = destination.timeout
        self._backoff = Backoff(rng)
        self._client: Redis | None = None

    async def close(self) -> None:
        await self._drop()

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        try:
            client = self._connection()
        except ValueError as exc:  # a URL redis-py cannot read: it will not heal by itself
            error = f"{self._where}: {self._text(exc)}"
            return [unavailable(error, self._backoff.pause())] * len(batch)
        pipeline = client.pipeline(transaction=False)
        for claimed in batch:
            pipeline.xadd(
                self._stream,
                {"id": claimed.event_id, "event": claimed.body},
                maxlen=self._maxlen,
                approximate=True,
            )
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except redis.exceptions.AuthenticationError as exc:
            error = f"{self._where} refused the credentials: {self._text(exc)}"
        except redis.exceptions.AuthorizationError as exc:
            error = f"{self._where} refused us: {self._text(exc)}"
        except (redis.exceptions.TimeoutError, TimeoutError):
            error = f"no answer from {self._where} within {self._timeout:g}s"
        except (redis.exceptions.ConnectionError, OSError) as exc:
            error = f"cannot reach {self._where}: {self._text(exc)}"
        else:
            # A server full, read-only or failing over is unavailable, not the events' fault.
            return self._backoff.settle([self._outcome(reply) for reply in replies])
        # Some entries may have been appended: sent again, the reader sees their ids twice.
        await self._drop()
        return [unavailable(error, self._backoff.pause())] * len(batch)

    def _outcome(self, reply: object) -> Outcome:
        """One XADD's reply: the entry's id, or the error it met: the server's state
        (OOM, READONLY …: it is unavailable) or the event's (WRONGTYPE, NOPERM …)."""
        if not isinstance(reply, Exception):
            return DELIVERED
        text = self._text(reply)
        if text.startswith(SERVER_STATES):
            return unavailable(f"{self._where} cannot take events now: {text}")
        return Outcome(delivered=False, error=f"stream {self._stream} refused it: {text}")

    def _connection(self) -> Redis:
        """The client and its pool, made at the first batch; redis-py connects when the
        pool has no connection open."""
        if self._client is None:
            self._client = Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # Retrying is ours, paced by the dispatcher.
                retry=Retry(NoBackoff(), 0),
                client_name=f"pixelpost-{self.name}",
            )
        return self._client

    def _text(self, exc: BaseException) -> str:
        """An error's own words, never with the password in them."""
        return scrub(str(exc) or type(exc).__name__, self._secrets)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
