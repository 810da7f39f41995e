"""NATS destinations: each event published to a JetStream stream and acknowledged, with
`Nats-Msg-Id` the event's id, so that the stream keeps one copy of an event sent twice
(at least once) within its duplicate window.

A stream that does not exist is created, taking the subject template with each
templated token a `*`; one that exists is used as it is, and an event whose subject it
does not take fails with an error that says so. nats-py's errors stay in here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from pipeline.destinations.base import DELIVERED, Outcome, unavailable
from pipeline.destinations.brokers import LEASE_MARGIN, Backoff, fill, scrub, secrets_in
from pixelpost.config import NatsDestination
from pixelpost.core.values import describe_url
from pixelpost.store import Claimed

log = logging.getLogger(__name__)

NATS_BATCH = 256
"""Events published at once; their acks are awaited together."""
DUPLICATE_WINDOW = 120.0
"""The duplicate window of a stream we create (the server's default, said aloud): it
covers a claim that lapsed (the lease) and the first retries after a lost ack."""


FULL_CODES = frozenset((10023, 10028, 10047))
"""JetStream's "insufficient resources", "memory resources exceeded" and "storage
resources exceeded"."""
FULL_WORDS = ("maximum messages", "maximum bytes", "resources exceeded")


def _full(exc: nats.js.errors.APIError) -> bool:
    """Whether JetStream refused for want of room (a stream at its limits, a server out
    of storage): an outage, which counts no attempt, not the event's fault."""
    text = (exc.description or "").lower()
    return exc.err_code in FULL_CODES or any(words in text for words in FULL_WORDS)


class _Unreachable(Exception):
    """The server, or its JetStream, cannot be used now: no fault of any event's."""


def stream_subject(template: str) -> str:
    """The subjects a stream must take for `template`: each token with a placeholder
    (`{config_set}`, `{event_type}`) becomes `*`."""
    return ".".join("*" if "{" in token else token for token in template.split("."))


def takes(subject_filter: str, subject: str) -> bool:
    """Whether a stream taking `subject_filter` takes every subject `subject` stands
    for (`subject` may hold `*` tokens; the filter `*` and `>`)."""
    wanted = subject.split(".")
    parts = subject_filter.split(".")
    for index, part in enumerate(parts):
        if part == ">":
            return len(wanted) > index
        if index >= len(wanted) or part not in ("*", wanted[index]):
            return False
    return len(wanted) == len(parts)


class NatsSender:
    """Publishes a batch's events to JetStream at once and waits for every ack, over one
    connection kept open between batches."""

    concurrency = 1
    batch_size = NATS_BATCH

    def __init__(self, destination: NatsDestination, *, rng: random.Random | None = None) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        # A batch takes one timeout to connect (and find or create the stream), one for acks.
        self.lease = 2 * destination.timeout + LEASE_MARGIN
        self._url = destination.url
        self._where = describe_url(destination.url)
        self._secrets = secrets_in(destination.url)
        self._stream = destination.stream
        self._subject = destination.subject
        self._timeout = destination.timeout
        self._backoff = Backoff(rng)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._filters: tuple[str, ...] = ()
        """The subjects the stream takes, as it said when connected."""
        self._last_error = ""
        """What nats-py last reported through its error callback (it raises only
        "no servers available" when every attempt to connect failed)."""
        self._connecting = asyncio.Lock()

    async def close(self) -> None:
        await self._drop()

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        try:
            js = await self._connected()
        except _Unreachable as exc:
            return [unavailable(str(exc), self._backoff.pause())] * len(batch)
        outcomes = self._backoff.settle(
            await asyncio.gather(*(self._publish(js, claimed) for claimed in batch))
        )
        if any(outcome.unavailable for outcome in outcomes):
            # An unanswered publish or a lost connection: a new connection next time.
            await self._drop()
        return outcomes

    def subject(self, claimed: Claimed) -> str:
        """The subject `claimed` is published on."""
        return fill(self._subject, claimed)

    async def _publish(self, js: JetStreamContext, claimed: Claimed) -> Outcome:
        subject = self.subject(claimed)
        if not any(takes(f, subject) for f in self._filters):
            taken = ", ".join(self._filters) or "no subjects"
            return Outcome(
                delivered=False,
                error=f"stream {self._stream} does not take subject {subject} (it takes {taken})",
            )
        try:
            await js.publish(
                subject,
                claimed.body,
                timeout=self._timeout,
                stream=self._stream,
                headers={"Nats-Msg-Id": claimed.event_id},
            )
        except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
            return self._failed(exc, subject, len(claimed.body))
        # A duplicate ack (the stream had the id already) is a delivery too.
        return DELIVERED

    def _failed(self, exc: Exception, subject: str, size: int) -> Outcome:
        """What a publish's error means: the event refused, or the server not answering."""
        if isinstance(exc, nats.errors.MaxPayloadError):
            return Outcome(delivered=False, error=f"{size} bytes is more than the server takes")
        unanswered = nats.js.errors.ServiceUnavailableError
        if isinstance(exc, nats.js.errors.APIError) and _full(exc):
            return unavailable(f"stream {self._stream} is full: {self._text(exc)}")
        if isinstance(exc, nats.js.errors.APIError) and not isinstance(exc, unanswered):
            error = f"stream {self._stream} refused it: {self._text(exc)}"
            return Outcome(delivered=False, error=error)
        # The rest say nothing against the event: it may even be stored (then the
        # stream's deduplication keeps one copy when it is sent again).
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            reason = f"no stream on {self._where} answered for subject {subject}"
        elif isinstance(exc, unanswered):
            reason = f"JetStream on {self._where} is unavailable: {self._text(exc)}"
        elif isinstance(exc, TimeoutError):
            reason = f"no ack from {self._where} within {self._timeout:g}s"
        else:
            reason = f"lost the connection to {self._where}: {self._text(exc)}"
        return unavailable(reason)

    async def _connected(self) -> JetStreamContext:
        """The JetStream context of the open connection, connecting (and finding or
        creating the stream) first when there is none."""
        async with self._connecting:
            if self._js is not None and self._client is not None and self._client.is_connected:
                return self._js
            await self._drop()
            client = Client()
            self._last_error = ""
            try:
                async with asyncio.timeout(self._timeout):
                    await client.connect(
                        servers=[self._url],
                        name=f"pixelpost {self.name}",
                        connect_timeout=math.ceil(self._timeout),
                        # Reconnecting is ours, paced by the dispatcher: nats-py makes two
                        # attempts (its fewest) and gives up.
                        allow_reconnect=False,
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0,
                        error_cb=self._on_error,
                    )
                    js = client.jetstream(timeout=self._timeout)
                    self._filters = await self._find_stream(js)
            except BaseException as exc:
                await client.close()
                if isinstance(exc, Exception):
                    raise self._unreachable(exc) from exc
                raise
            log.info("destination %s: connected to %s", self.name, self._where)
            self._client, self._js = client, js
            return js

    async def _find_stream(self, js: JetStreamContext) -> tuple[str, ...]:
        """The subjects of the stream, created when missing; warns once per connection
        when the stream exists but does not take every subject we publish on."""
        wanted = stream_subject(self._subject)
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self._stream, subjects=[wanted], duplicate_window=DUPLICATE_WINDOW
                )
            )
            log.info(
                "destination %s: created JetStream stream %s taking %s",
                self.name,
                self._stream,
                wanted,
            )
            return (wanted,)
        filters = tuple(info.config.subjects or ())
        if not any(takes(f, wanted) for f in filters):
            log.warning(
                "destination %s: stream %s takes %s, not all of %s; events on other subjects "
                "fail (the stream is left as it is)",
                self.name,
                self._stream,
                ", ".join(filters) or "no subjects",
                wanted,
            )
        return filters

    def _unreachable(self, exc: Exception) -> _Unreachable:
        """What kept us from the server, in words, without the URL's password."""
        if isinstance(exc, TimeoutError):
            return _Unreachable(f"no answer from {self._where} within {self._timeout:g}s")
        if isinstance(exc, nats.errors.NoServersError):
            reason = f": {self._last_error}" if self._last_error else ""
            return _Unreachable(f"cannot connect to {self._where}{reason}")
        if isinstance(exc, nats.errors.AuthorizationError):
            return _Unreachable(f"{self._where} refused the credentials: {self._text(exc)}")
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return _Unreachable(f"{self._where} has no JetStream (is it enabled?)")
        if isinstance(exc, nats.js.errors.APIError):
            return _Unreachable(
                f"cannot find or create stream {self._stream} on {self._where}: {self._text(exc)}"
            )
        return _Unreachable(f"cannot connect to {self._where}: {self._text(exc)}")

    def _text(self, exc: BaseException) -> str:
        """An error's own words, never with the password in them."""
        if isinstance(exc, nats.js.errors.APIError) and exc.description:
            text = exc.description
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or type(exc).__name__
        return scrub(text, self._secrets).removeprefix("nats: ")

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = self._text(exc)
        log.debug("destination %s: nats: %s", self.name, self._last_error)

    async def _drop(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()
