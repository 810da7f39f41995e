"""The seam between accepting a message and delivering it.

The handler builds a `Submission` for every accepted message and asks a `Delivery` for
the reply to give the client. `ForwardingDelivery` forwards while the client waits;
a spooling delivery will take its place without the handler changing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pixelpost.config import ConfigSet
from pixelpost.errors import PermanentDeliveryError, TemporaryDeliveryError
from relay.upstream import Transport

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
    mail: Mapping[str, Any]
    """The SES `mail` object every event of this copy carries."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    """A message the relay accepted: one or more copies to deliver."""

    mail_from: str
    mail_options: tuple[str, ...]
    copies: tuple[Outgoing, ...]
    config_set: ConfigSet | None
    client: Client
    received_at: datetime

    @property
    def recipients(self) -> int:
        return sum(len(copy.recipients) for copy in self.copies)


class Delivery(Protocol):
    """Takes responsibility for a submission and says what to reply to the client."""

    async def submit(self, submission: Submission) -> str: ...


def _reply_text(text: str) -> str:
    # The upstream's text goes back to our client: keep it on one line.
    return " ".join(text.split())


class ForwardingDelivery:
    """Forwards each message upstream while the client waits, and turns the upstream's
    answer into the client's: 2xx -> 250, 4xx or no connection -> 451, 5xx -> 554.

    A recipient the upstream defers while it takes the others makes the whole message
    451, so the client sends it again: a duplicate for the others beats a loss. One it
    refuses for good while it takes the others is logged; the client already has its
    reply for the message, and bounces for it arrive with the spool.
    """

    def __init__(self, *, transport: Transport) -> None:
        self._transport = transport

    async def submit(self, submission: Submission) -> str:
        deferred: list[str] = []
        refused: list[str] = []
        delivered = 0
        for copy in submission.copies:
            try:
                result = await self._transport.send(
                    mail_from=submission.mail_from,
                    rcpt_tos=copy.recipients,
                    content=copy.content,
                    mail_options=submission.mail_options,
                )
            except TemporaryDeliveryError as exc:
                log.warning("%s: upstream deferred: %s", copy.message_id, exc)
                deferred.append(
                    _reply_text(exc.text)
                    if exc.code // 100 == 4
                    else f"4.4.1 upstream said: {exc.code} {_reply_text(exc.text)}"
                )
                continue
            except PermanentDeliveryError as exc:
                log.warning("%s: upstream refused: %s", copy.message_id, exc)
                refused.append(_reply_text(exc.text))
                continue
            for rcpt, reply in result.refused.items():
                log.error("%s: upstream refused <%s>: %s", copy.message_id, rcpt, reply)
                if reply.code < 500:
                    deferred.append(f"4.4.1 upstream deferred <{rcpt}>: {reply}")
            delivered += len(copy.recipients) - len(result.refused)
            log.info(
                "%s: delivered from=<%s> to=%d via %s: %s",
                copy.message_id,
                submission.mail_from,
                len(copy.recipients) - len(result.refused),
                self._transport.describe(),
                result.reply,
            )
        if deferred:
            return f"451 {deferred[0]}"
        if refused and not delivered:
            return f"554 {refused[0]}"
        return f"250 2.0.0 Ok: queued as {submission.copies[0].message_id}"
