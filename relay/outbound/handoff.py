"""The seam between accepting a message and delivering it.

The handler builds a `Submission` for every accepted message and asks a `Delivery` for
the reply to give the client; `SpoolingDelivery` spools it and lets the delivery queue
(`relay.outbound.queue`) do the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pixelpost.core.rewrite import MessagePlan
from pixelpost.logs import fields
from relay import replies
from relay.outbound.queue import DeliveryQueue
from relay.outbound.spool import Spool
from relay.outbound.spoolfile import Envelope, SpoolError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    """A message the relay accepted, and how to make its copies."""

    envelope: Envelope
    content: bytes
    """As accepted: control headers removed, nothing added yet."""
    plan: MessagePlan | None = None
    """The tracking plan made while accepting it, so that its first delivery need not
    plan again."""


class Delivery(Protocol):
    """Takes responsibility for a submission and says what to reply to the client."""

    async def submit(self, submission: Submission) -> str: ...


class SpoolingDelivery:
    """Takes responsibility for a message the way Postfix does: it is written to the
    spool and fsync'd, once whatever the number of recipients, before the client hears
    250; the delivery queue then delivers it, retries it, or bounces it, through crashes
    and restarts."""

    def __init__(self, *, spool: Spool, queue: DeliveryQueue) -> None:
        self._spool = spool
        self._queue = queue

    async def submit(self, submission: Submission) -> str:
        envelope = submission.envelope
        try:
            await self._spool.commit([(envelope, submission.content)])
        except SpoolError as exc:
            log.error(
                "%s: not accepted: %s", envelope.id, exc, extra=fields(message_id=envelope.id)
            )
            return replies.CANNOT_QUEUE
        self._queue.add(envelope, submission.content, submission.plan)
        return replies.queued(envelope.id)
