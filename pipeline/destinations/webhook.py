"""Webhook destinations: one POST per event, signed as Standard Webhooks asks.

webhook-id is the event's stable id, webhook-signature "v1,<base64 HMAC-SHA256>" over
"{id}.{timestamp}.{body}"; 2xx is success, anything else (a redirect too) a failure,
410 Gone disables the destination. aiohttp's errors stay in here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

import aiohttp

from pipeline.destinations.base import (
    DELIVERED,
    HTTP_BATCH,
    HTTP_BATCHES,
    HTTP_REQUESTS_IN_FLIGHT,
    Outcome,
)
from pixelpost import __version__
from pixelpost.config import WebhookDestination
from pixelpost.core.retry import parse_retry_after
from pixelpost.keys import decode_webhook_secret
from pixelpost.store import Claimed

_ERROR_BODY_LIMIT = 300


def sign(secret: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature of one request."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(secret, signed, hashlib.sha256)).decode("ascii")


class WebhookSender:
    """POSTs each event to a Standard Webhooks endpoint."""

    concurrency = HTTP_BATCHES
    batch_size = HTTP_BATCH

    def __init__(
        self,
        destination: WebhookDestination,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        # A request may wait for the other batch's to finish, then take its own time.
        self.lease = 2 * destination.timeout + 5
        self._url = destination.url
        self._secret = decode_webhook_secret(destination.secret)
        self._timeout = aiohttp.ClientTimeout(total=destination.timeout)
        self._session = session
        self._clock = clock
        self._requests = asyncio.Semaphore(HTTP_REQUESTS_IN_FLIGHT)

    async def close(self) -> None:
        pass  # nothing held between batches

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._limited(claimed) for claimed in batch)))

    async def _limited(self, claimed: Claimed) -> Outcome:
        async with self._requests:
            return await self._post(claimed)

    async def _post(self, claimed: Claimed) -> Outcome:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pixelpost/{__version__}",
            "webhook-id": claimed.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, claimed.event_id, timestamp, claimed.body),
        }
        try:
            async with self._session.post(
                self._url,
                data=claimed.body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return DELIVERED
                text = (await response.content.read(_ERROR_BODY_LIMIT)).decode("utf-8", "replace")
                error = f"HTTP {response.status} {response.reason or ''}: {' '.join(text.split())}"
                if response.status == 410:
                    return Outcome(delivered=False, error=error, gone=True)
                return Outcome(
                    delivered=False,
                    error=error.rstrip(": "),
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return Outcome(delivered=False, error=f"no answer within {self._timeout.total:g}s")
        except aiohttp.ClientError as exc:
            return Outcome(delivered=False, error=f"{type(exc).__name__}: {exc}")
