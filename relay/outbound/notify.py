"""Delivery status notifications: the report to a sender whose message bounced.

An attempt (`relay.outbound.attempt`) records a bounce's event itself, then asks for a
notification; `BounceNotifier` writes it, spools it like an accepted message (so that it
survives a crash and is retried like one), and hands it to the delivery queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pixelpost.config import RelayConfig
from pixelpost.core.bounces import enhanced_status
from pixelpost.core.dsn import Failure, notification
from pixelpost.core.ids import new_message_id
from pixelpost.logs import fields
from relay.outbound.attempt import Failed
from relay.outbound.spool import Spool, SpoolError
from relay.outbound.spoolfile import Copy, Envelope

# The delivery queue's logger: its lines keep the `logger` they always had.
log = logging.getLogger("relay.outbound.queue")


class BounceNotifier:
    """Spools a notification for each bounce an attempt reports, and queues it."""

    def __init__(
        self,
        *,
        spool: Spool,
        relay: RelayConfig,
        clock: Callable[[], float],
        enqueue: Callable[[Envelope, bytes], None],
    ) -> None:
        self._spool = spool
        self._relay = relay
        self._clock = clock
        self._enqueue = enqueue

    async def notify(self, envelope: Envelope, content: bytes, failed: Failed) -> None:
        """Queue a delivery status notification to the sender, unless the message is one
        itself, has no sender to return to, or notifications are off."""
        if envelope.notification or not envelope.mail_from or not self._relay.bounce_notifications:
            return
        about = fields(message_id=envelope.id)
        report = self._report(envelope, content, failed)
        if report is None:
            return
        dsn = self._envelope(envelope.mail_from)
        try:
            await self._spool.commit([(dsn, report)])
        except SpoolError as exc:
            log.error(
                "%s: cannot queue the bounce notification: %s", envelope.id, exc, extra=about
            )
            return
        log.info(
            "%s: bounce notification %s for <%s>",
            envelope.id,
            dsn.id,
            envelope.mail_from,
            extra=about,
        )
        self._enqueue(dsn, report)

    def _report(self, envelope: Envelope, content: bytes, failed: Failed) -> bytes | None:
        """The notification's message; None if it cannot be written (the bounce stands,
        its event is recorded, without a report)."""
        try:
            return notification(
                original=content,
                sender=envelope.mail_from,
                failures=[
                    Failure(recipient=r, status=enhanced_status(c, t), diagnostic=f"{c} {t}")
                    for r, (c, t) in failed.items()
                ],
                reporting_mta=self._relay.hostname,
                arrival=datetime.fromtimestamp(envelope.received_at, UTC),
            )
        except Exception:
            log.exception(
                "%s: cannot write the bounce notification",
                envelope.id,
                extra=fields(message_id=envelope.id),
            )
            return None

    def _envelope(self, sender: str) -> Envelope:
        """The notification's envelope: from the null sender (it is never bounced in
        turn) to `sender`, with the lifetime of any message."""
        now = self._clock()
        dsn_id = new_message_id()
        return Envelope(
            id=dsn_id,
            mail_from="",
            copies=(Copy(id=dsn_id, recipients=(sender,)),),
            received_at=now,
            expires_at=now + self._relay.max_queue_lifetime,
            notification=True,
        )
