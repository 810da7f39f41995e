"""The aiosmtpd handler: refuses clients that may not relay, reads the configuration set
of each message, and hands the message to delivery.

Outcomes are SMTP replies, returned as strings, as aiosmtpd's hooks expect.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from pixelpost.config import Config, ConfigSet
from relay.access import AccessPolicy, client_address, format_peer
from relay.delivery import Client, Delivery, Submission
from relay.headers import extract_controls, protocol_name, received_field

log = logging.getLogger(__name__)

RECIPIENTS_LIMIT_DEFAULT = 1000
"""Recipients per message, as Postfix's `smtpd_recipient_limit`."""

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"


def new_queue_id() -> str:
    """A short, unique-enough id for logs and `Received:` (Postfix-style, no vowels)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


class UnknownConfigSet(LookupError):
    """A message named a configuration set that is not configured."""


class RelayHandler:
    """aiosmtpd hooks for the relay."""

    def __init__(
        self,
        *,
        config: Config,
        access: AccessPolicy,
        delivery: Delivery,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recipients_limit: int = RECIPIENTS_LIMIT_DEFAULT,
    ) -> None:
        self._config = config
        self._access = access
        self._delivery = delivery
        self._clock = clock
        self._recipients_limit = recipients_limit
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._access.may_relay(
            address=client_address(session.peer), authenticated=bool(session.authenticated)
        ):
            log.warning("%s: relay access denied for <%s>", format_peer(session.peer), address)
            return "554 5.7.1 Relay access denied"
        if len(envelope.rcpt_tos) >= self._recipients_limit:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            return await self._accept(session, envelope)
        finally:
            self._in_flight.discard(task)

    async def _accept(self, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        assert envelope.mail_from is not None
        controls = extract_controls(envelope.original_content)
        try:
            config_set = self._config_set(controls.config_set)
        except UnknownConfigSet:
            name = controls.config_set or ""
            log.warning("%s: unknown configuration set %r", format_peer(session.peer), name)
            shown = "".join(c if c.isprintable() else "?" for c in name)[:64]
            return f'554 5.6.0 Configuration set "{shown}" does not exist'
        if controls.rejected_tags:
            log.warning(
                "%s: ignoring malformed message tags %s (use name=value with letters, digits,"
                " _ and -)",
                format_peer(session.peer),
                controls.rejected_tags,
            )
        queue_id = new_queue_id()
        now = self._clock()
        address = client_address(session.peer)
        client = Client(
            address=str(address) if address else "unknown",
            helo=session.host_name,
            user=session.auth_data if isinstance(session.auth_data, str) else None,
            tls=session.ssl is not None,
        )
        received = received_field(
            helo=client.helo,
            client_ip=client.address,
            hostname=self._config.relay.hostname,
            protocol=protocol_name(
                esmtp=session.extended_smtp,
                tls=client.tls,
                authenticated=bool(session.authenticated),
                smtputf8=envelope.smtp_utf8,
            ),
            queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            when=now,
        )
        submission = Submission(
            id=queue_id,
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            content=received + controls.content,
            config_set=config_set,
            tags=controls.tags,
            client=client,
            received_at=now,
        )
        log.info(
            "%s: from=<%s> to=%d size=%d config_set=%s client=%s",
            queue_id,
            submission.mail_from,
            len(submission.rcpt_tos),
            len(submission.content),
            config_set.name if config_set else "-",
            client.address,
        )
        return await self._delivery.submit(submission)

    def _config_set(self, requested: str | None) -> ConfigSet | None:
        name = requested if requested is not None else self._config.default_config_set
        if name is None:
            return None
        config_set = self._config.config_sets.get(name)
        if config_set is None:
            raise UnknownConfigSet(name)
        return config_set

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` seconds for messages being handed over; False if some
        are still going when it runs out."""
        if not self._in_flight:
            return True
        _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
        return not pending
