"""How events reach each kind of destination.

A sender takes a batch of claimed events and says, for each, whether it was delivered,
failed (and may be retried, perhaps after a Retry-After), or was refused for good by an
endpoint that is gone (HTTP 410). Errors of aiohttp and of the file system stay in here.

    webhook   one POST per event, signed as Standard Webhooks asks: webhook-id is the
              event's stable id, webhook-signature "v1,<base64 HMAC-SHA256>" over
              "{id}.{timestamp}.{body}"; 2xx is success, anything else (a redirect too)
              a failure
    file      JSON lines, appended and fsync'd, a batch at a time
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from pixelpost import __version__
from pixelpost.config import Destination, FileDestination, WebhookDestination
from pixelpost.core.retry import parse_retry_after
from pixelpost.keys import decode_webhook_secret
from pixelpost.store import Claimed

WEBHOOK_CONCURRENCY = 8
"""Requests in flight to one webhook endpoint."""
FILE_BATCH = 500
FILE_RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0, 300.0, 1800.0, 7200.0, 21600.0, 43200.0)
_ERROR_BODY_LIMIT = 300


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What became of one delivery attempt."""

    delivered: bool
    error: str = ""
    retry_after: float | None = None
    gone: bool = False


DELIVERED = Outcome(delivered=True)


class Sender(Protocol):
    """Delivers batches of events to one destination."""

    name: str
    concurrency: int
    batch_size: int
    retry_delays: tuple[float, ...]
    lease: float
    """How long a claimed batch stays hidden from other claims: longer than an attempt."""

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]: ...


def sign(secret: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature of one request."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(secret, signed, hashlib.sha256)).decode("ascii")


class WebhookSender:
    """POSTs each event to a Standard Webhooks endpoint."""

    concurrency = WEBHOOK_CONCURRENCY
    batch_size = 1

    def __init__(
        self,
        destination: WebhookDestination,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = destination.name
        self.retry_delays = destination.retry_delays
        self.lease = 2 * destination.timeout + 5
        self._url = destination.url
        self._secret = decode_webhook_secret(destination.secret)
        self._timeout = aiohttp.ClientTimeout(total=destination.timeout)
        self._session = session
        self._clock = clock

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        return [await self._post(claimed) for claimed in batch]

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


class FileSender:
    """Appends events as JSON lines; the batch is fsync'd before it counts as delivered."""

    concurrency = 1
    batch_size = FILE_BATCH
    retry_delays = FILE_RETRY_DELAYS
    lease = 300.0

    def __init__(self, destination: FileDestination) -> None:
        self.name = destination.name
        self._path = destination.path

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        try:
            await asyncio.to_thread(self._append, [claimed.body for claimed in batch])
        except OSError as exc:
            failed = Outcome(
                delivered=False, error=f"cannot write {self._path}: {exc.strerror or exc}"
            )
            return [failed] * len(batch)
        return [DELIVERED] * len(batch)

    def _append(self, bodies: list[bytes]) -> None:
        path: Path = self._path
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            data = memoryview(b"\n".join(bodies) + b"\n")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


def make_sender(destination: Destination, session: aiohttp.ClientSession) -> Sender:
    """The sender for a configured destination."""
    if isinstance(destination, WebhookDestination):
        return WebhookSender(destination, session)
    return FileSender(destination)
