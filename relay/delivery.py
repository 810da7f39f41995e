"""The seam between accepting a message and delivering it.

The handler builds a `Submission` for every accepted message and asks a `Delivery` for
the reply to give the client; `SpoolingDelivery` spools it and lets the delivery queue
(`relay.queue`) do the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pixelpost.config import ConfigSet
from relay.queue import DeliveryQueue
from relay.spool import Envelope, Spool, SpoolError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Client:
    """Who handed the message to the relay."""

    address: str
    helo: str | None
    user: str | None = None
    tls: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """One copy of a message, ready for the upstream."""

    message_id: str
    recipients: tuple[str, ...]
    content: bytes
    """As it goes upstream: control headers removed, tracking added, `Received:` on top."""
    mail: str
    """The SES `mail` object (JSON) every event of this copy carries."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    """A message the relay accepted: one or more copies to deliver."""

    mail_from: str
    mail_options: tuple[str, ...]
    copies: tuple[Outgoing, ...]
    config_set: ConfigSet | None
    client: Client
    received_at: datetime
    rendering_failure: str | None = None
    """Why tracking was left out, when it was."""

    @property
    def recipients(self) -> int:
        return sum(len(copy.recipients) for copy in self.copies)


class Delivery(Protocol):
    """Takes responsibility for a submission and says what to reply to the client."""

    async def submit(self, submission: Submission) -> str: ...


class SpoolingDelivery:
    """Takes responsibility for a message the way Postfix does: every copy is written to
    the spool and fsync'd before the client hears 250; the delivery queue then delivers
    it, retries it, or bounces it, through crashes and restarts."""

    def __init__(
        self,
        *,
        spool: Spool,
        queue: DeliveryQueue,
        max_queue_lifetime: float,
    ) -> None:
        self._spool = spool
        self._queue = queue
        self._lifetime = max_queue_lifetime

    async def submit(self, submission: Submission) -> str:
        received = submission.received_at.timestamp()
        copies = [
            (
                Envelope(
                    id=copy.message_id,
                    mail_from=submission.mail_from,
                    recipients=copy.recipients,
                    mail_options=submission.mail_options,
                    config_set=submission.config_set.name if submission.config_set else None,
                    received_at=received,
                    expires_at=received + self._lifetime,
                    mail=copy.mail,
                    rendering_failure=submission.rendering_failure,
                ),
                copy.content,
            )
            for copy in submission.copies
        ]
        try:
            await self._spool.commit(copies)
        except SpoolError as exc:
            log.error("%s: not accepted: %s", submission.copies[0].message_id, exc)
            return "451 4.3.0 Cannot queue the message now; please try again later"
        self._queue.add(copies)
        return f"250 2.0.0 Ok: queued as {submission.copies[0].message_id}"
