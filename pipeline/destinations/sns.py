"""SNS-compatible destinations: one POST per event, as Amazon SNS delivers a topic's
notifications to a subscribed HTTP(S) endpoint (`pixelpost.core.sns` builds and signs
the messages).

The destination's subscription lives in the store. Until the endpoint confirms it, by
visiting the SubscribeURL of the SubscriptionConfirmation sent to it (again and again,
an hour apart at most, while it does not), its events wait in the outbox uncounted; once
it visits the UnsubscribeURL, the destination is disabled until a replay. A Notification's
MessageId is the event's id, the same on every attempt. 2xx is success, anything else (a
redirect too) a failure, 410 Gone disables the destination. aiohttp's errors stay here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from pipeline.destinations.base import (
    DELIVERED,
    HTTP_BATCH,
    HTTP_BATCHES,
    HTTP_REQUESTS_IN_FLIGHT,
    Outcome,
    unavailable,
)
from pixelpost import __version__
from pixelpost.config import Config, SnsConfig, SnsDestination
from pixelpost.core import sns
from pixelpost.core.retry import parse_retry_after
from pixelpost.core.values import describe_url
from pixelpost.errors import ConfigError
from pixelpost.store import Claimed, SnsSubscription, SnsSubscriptions, StoreError

log = logging.getLogger(__name__)

PENDING_PAUSE = 2.0
"""Seconds the dispatcher leaves a destination alone while its subscription waits for
the endpoint's confirmation: how soon events flow once it confirms."""
RECHECK = 1.0
"""A subscription not confirmed is read from the store again at most this often (the
tracker, perhaps in another process, confirms it there)."""
CONFIRMED_RECHECK = 10.0
"""A confirmed subscription is read again this often: how soon an unsubscribe (the
tracker's UnsubscribeURL) stops the notifications."""
CONFIRM_WITHIN = 3 * 86400.0
"""A subscription not confirmed within this long ends, as SNS's confirmation tokens
expire after three days: its events become dead letters (replayable, which subscribes
again) rather than waiting, and holding the store's retention back, for ever."""
RESEND_FIRST = 60.0
RESEND_MAX = 3600.0
"""A SubscriptionConfirmation is sent again while the subscription is pending, first
after RESEND_FIRST seconds, then at doubling intervals up to RESEND_MAX."""
STORE_PAUSE = 5.0
_ERROR_BODY_LIMIT = 300


def read_signing_key(config: SnsConfig) -> sns.SigningKey:
    """The key and certificate `[sns]` names; ConfigError naming the key, the file and
    what is wrong."""
    pems: list[bytes] = []
    for key, path, what in (
        ("sns.key", config.key, "key"),
        ("sns.certificate", config.certificate, "certificate"),
    ):
        try:
            pems.append(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                [
                    f"{key}: cannot read the {what} file {str(path)!r}: "
                    f"{exc.strerror or exc} (`pixelpost sns keygen` makes the key and "
                    "certificate)"
                ]
            ) from None
    try:
        return sns.load_signing_key(*pems)
    except sns.SnsKeyError as exc:
        which, _, why = str(exc).partition(": ")
        path = config.key if which == "key" else config.certificate
        raise ConfigError([f"sns.{which}: {str(path)!r}: {why}"]) from None


class SnsSender:
    """POSTs each event to an endpoint as an SNS Notification, once the endpoint has
    confirmed its subscription."""

    concurrency = HTTP_BATCHES
    batch_size = HTTP_BATCH

    def __init__(
        self,
        destination: SnsDestination,
        *,
        config: Config,
        session: aiohttp.ClientSession,
        store: SnsSubscriptions,
        clock: Callable[[], float] = time.time,
        pending_pause: float = PENDING_PAUSE,
        recheck: float = RECHECK,
    ) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        # A delivery may wait for a SubscriptionConfirmation's POST and for the other
        # batch's requests, then make its own.
        self.lease = 3 * destination.timeout + 5
        self._destination = destination
        self._key = read_signing_key(config.sns)
        self._public_url = config.tracker.public_url
        self._where = describe_url(destination.url)
        self._timeout = aiohttp.ClientTimeout(total=destination.timeout)
        self._session = session
        self._store = store
        self._clock = clock
        self._pending_pause = pending_pause
        self._recheck = recheck
        self._lock = asyncio.Lock()
        self._requests = asyncio.Semaphore(HTTP_REQUESTS_IN_FLIGHT)
        self._subscription: SnsSubscription | None = None
        self._read_at = float("-inf")
        self._resend_arn = ""
        """The pending subscription the confirmation schedule below is for."""
        self._resend_at = 0.0
        self._resend_delay = RESEND_FIRST

    async def close(self) -> None:
        pass  # nothing held between batches

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        async with self._lock:
            try:
                subscription = await self._current()
                if (
                    subscription.state == "pending"
                    and self._clock() - subscription.requested_at > CONFIRM_WITHIN
                ):
                    return [await self._expire(subscription)] * len(batch)
                if subscription.state == "pending" and await self._confirm_when_due(subscription):
                    # An endpoint may confirm before it answers (django-ses does).
                    subscription = await self._current(again=True)
            except StoreError as exc:
                error = f"cannot read or make its subscription: {exc}"
                return [unavailable(error, STORE_PAUSE)] * len(batch)
        if subscription.state == "pending":
            waiting = unavailable(
                f"waiting for the endpoint {self._where} to confirm subscription "
                f"{subscription.arn} (by visiting the SubscribeURL of its "
                "SubscriptionConfirmation)",
                self._pending_pause,
            )
            return [waiting] * len(batch)
        if subscription.state == "unsubscribed":
            gone = Outcome(
                delivered=False,
                error=f"the endpoint unsubscribed (visited the UnsubscribeURL of "
                f"{subscription.arn}); `pixelpost events replay --destination {self.name}` "
                "subscribes it again",
                gone=True,
            )
            return [gone] * len(batch)
        return list(
            await asyncio.gather(*(self._notify(claimed, subscription) for claimed in batch))
        )

    async def _expire(self, subscription: SnsSubscription) -> Outcome:
        """End a subscription its endpoint never confirmed: the destination is disabled
        (its events dead letters) until a replay subscribes it again."""
        ended = await self._store.sns_unsubscribe(subscription.arn)
        if ended is not None:
            self._subscription = ended
        return Outcome(
            delivered=False,
            error=f"the endpoint {self._where} did not confirm subscription "
            f"{subscription.arn} within {CONFIRM_WITHIN / 86400:g} days; `pixelpost events "
            f"replay --destination {self.name}` subscribes it again",
            gone=True,
        )

    def _fits(self, subscription: SnsSubscription) -> bool:
        """Whether `subscription` is one for the destination as configured now."""
        d = self._destination
        if subscription.endpoint != d.url or subscription.topic_arn != d.topic_arn:
            return False
        return d.confirm or subscription.state != "pending"

    async def _current(self, *, again: bool = False) -> SnsSubscription:
        """The destination's subscription: the one known, while it is fresh enough (and
        not `again`); else the store's, made (or made anew for a changed endpoint or
        topic) when it has none."""
        now = self._clock()
        known = self._subscription
        if known is not None and not again:
            fresh = CONFIRMED_RECHECK if known.state == "confirmed" else self._recheck
            if now - self._read_at < fresh:
                return known
        stored = await self._store.sns_subscription(self.name)
        if stored is None or not self._fits(stored):
            stored = await self._subscribe(replacing=None if stored is None else stored.arn)
        self._subscription, self._read_at = stored, now
        return stored

    async def _subscribe(self, *, replacing: str | None) -> SnsSubscription:
        d = self._destination
        now = self._clock()
        made = SnsSubscription(
            destination=self.name,
            arn=sns.new_subscription_arn(d.topic_arn),
            endpoint=d.url,
            topic_arn=d.topic_arn,
            token=sns.new_token(),
            state="pending" if d.confirm else "confirmed",
            requested_at=now,
            changed_at=now,
        )
        stored = await self._store.sns_subscribe(made, replacing=replacing)
        if stored.arn != made.arn:
            return stored  # another dispatcher's, made first: it sends the confirmation
        replaced = f", in place of {replacing}" if replacing else ""
        log.info(
            "destination %s: subscribed %s to %s as %s (%s)%s",
            self.name,
            self._where,
            d.topic_arn,
            made.arn,
            made.state,
            replaced,
        )
        if made.state == "pending":
            self._resend_arn, self._resend_at, self._resend_delay = made.arn, now, RESEND_FIRST
        return stored

    async def _confirm_when_due(self, subscription: SnsSubscription) -> bool:
        """Send the SubscriptionConfirmation when it is due: at once for a subscription
        made here, RESEND_FIRST seconds after first seeing one made elsewhere (or before
        a restart), then at doubling intervals up to RESEND_MAX. Whether it was sent and
        the endpoint took it."""
        now = self._clock()
        if subscription.arn != self._resend_arn:
            self._resend_arn, self._resend_at = subscription.arn, now + RESEND_FIRST
            self._resend_delay = RESEND_FIRST
        if now < self._resend_at:
            return False
        delay = self._resend_delay
        self._resend_at, self._resend_delay = now + delay, min(2 * delay, RESEND_MAX)
        message = sns.subscription_confirmation(
            topic_arn=subscription.topic_arn,
            subscription_arn=subscription.arn,
            token=subscription.token,
            at=now,
            public_url=self._public_url,
            key=self._key,
            version=self._destination.signature_version,
        )
        outcome = await self._post(message, subscription.arn)
        if outcome.delivered:
            log.info(
                "destination %s: SubscriptionConfirmation sent to %s; events wait until the "
                "endpoint visits its SubscribeURL (sent again in %.0fs if it does not)",
                self.name,
                self._where,
                delay,
            )
            return True
        log.warning(
            "destination %s: SubscriptionConfirmation to %s failed: %s; sent again in "
            "%.0fs, events wait",
            self.name,
            self._where,
            outcome.error,
            delay,
        )
        return False

    async def _notify(self, claimed: Claimed, subscription: SnsSubscription) -> Outcome:
        async with self._requests:
            return await self._notify_now(claimed, subscription)

    async def _notify_now(self, claimed: Claimed, subscription: SnsSubscription) -> Outcome:
        message = sns.notification(
            message_id=claimed.event_id,
            topic_arn=subscription.topic_arn,
            subscription_arn=subscription.arn,
            message=claimed.body.decode("utf-8"),
            at=self._clock(),
            public_url=self._public_url,
            key=self._key,
            version=self._destination.signature_version,
        )
        return await self._post(message, subscription.arn)

    async def _post(self, message: Mapping[str, str], subscription_arn: str) -> Outcome:
        headers = sns.request_headers(
            message, subscription_arn=subscription_arn, user_agent=f"pixelpost/{__version__}"
        )
        try:
            async with self._session.post(
                self._destination.url,
                data=sns.encode(message),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return DELIVERED
                text = (await response.content.read(_ERROR_BODY_LIMIT)).decode("utf-8", "replace")
                error = f"HTTP {response.status} {response.reason or ''}".rstrip()
                if 300 <= response.status < 400:
                    location = response.headers.get("Location", "")[:_ERROR_BODY_LIMIT]
                    error += f" to {location!r} (redirects are not followed)"
                elif text.strip():
                    error += f": {' '.join(text.split())}"
                if response.status == 410:
                    return Outcome(delivered=False, error=error, gone=True)
                return Outcome(
                    delivered=False,
                    error=error,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return Outcome(delivered=False, error=f"no answer within {self._timeout.total:g}s")
        except aiohttp.ClientError as exc:
            return Outcome(delivered=False, error=f"{type(exc).__name__}: {exc}")
