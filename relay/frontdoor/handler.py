"""The aiosmtpd handler: refuses clients that may not relay, reads the configuration set
of each message, and hands the message to delivery.

Outcomes are SMTP replies, returned as strings, as aiosmtpd's hooks expect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session

from pixelpost.config import Config, ConfigSet
from pixelpost.core.addresses import mailbox_problem
from pixelpost.core.events import dumps
from pixelpost.core.headers import extract_controls, parse_header_section, protocol_name
from pixelpost.core.ids import new_message_id
from pixelpost.core.mail import common_headers, mail_object
from pixelpost.logs import fields
from relay.frontdoor.access import AccessPolicy, client_address, format_peer
from relay.frontdoor.auth import Accounts
from relay.outbound.handoff import Delivery, Submission
from relay.outbound.spoolfile import Envelope as SpooledEnvelope
from relay.outbound.spoolfile import Trace, Tracking
from relay.tracking import Rewriter, copies_for

log = logging.getLogger(__name__)


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
        rewriter: Rewriter,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = new_message_id,
        accounts: Accounts | None = None,
    ) -> None:
        self._config = config
        self._accounts = accounts or Accounts(config.relay.users)
        self._access = access
        self._delivery = delivery
        self._rewriter = rewriter
        self._clock = clock
        self._new_id = new_id
        self._recipients_limit = config.relay.max_recipients
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd lists AUTH after TLS even with no mechanism left (no accounts).
        return [line for line in responses if line.rstrip() != "250-AUTH"]

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: ProxyData
    ) -> bool:
        """Called only with relay.proxy_protocol on: the real client is the PROXY
        header's (see `relay.frontdoor.server`)."""
        proxied: Callable[[ProxyData], Awaitable[bool]] | None = getattr(server, "proxied", None)
        return await proxied(proxy_data) if proxied is not None else False

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address != "<>" and (problem := mailbox_problem(address, smtputf8=envelope.smtp_utf8)):
            peer = format_peer(session.peer)
            log.warning("%s: bad sender %r: %s", peer, address, problem, extra=fields(peer=peer))
            return f"501 5.1.7 Bad sender address syntax ({problem})"
        user = session.auth_data if session.authenticated else None
        if isinstance(user, str) and not self._accounts.may_send_from(user, address):
            peer = format_peer(session.peer)
            log.warning(
                "%s: user %s may not send as <%s>", peer, user, address, extra=fields(peer=peer)
            )
            return f"553 5.7.1 <{address}>: sender address not allowed for user {user}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

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
            peer = format_peer(session.peer)
            log.warning("%s: relay access denied for <%s>", peer, address, extra=fields(peer=peer))
            return "554 5.7.1 Relay access denied"
        if problem := mailbox_problem(address, smtputf8=envelope.smtp_utf8):
            peer = format_peer(session.peer)
            log.warning(
                "%s: bad recipient %r: %s", peer, address, problem, extra=fields(peer=peer)
            )
            return f"501 5.1.3 Bad recipient address syntax ({problem})"
        if address in envelope.rcpt_tos:
            return "250 2.1.5 Ok"  # one copy per recipient, as Postfix's duplicate filter
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
        # aiosmtpd reports the null reverse path (MAIL FROM:<>) as "<>".
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        original = envelope.original_content
        controls = extract_controls(original)
        try:
            config_set = self._config_set(controls.config_set)
        except UnknownConfigSet:
            name = controls.config_set or ""
            peer = format_peer(session.peer)
            log.warning("%s: unknown configuration set %r", peer, name, extra=fields(peer=peer))
            shown = "".join(c if c.isprintable() else "?" for c in name)[:64]
            return f'554 5.6.0 Configuration set "{shown}" does not exist'
        if controls.rejected_tags:
            header, entry = controls.rejected_tags[0]
            peer = format_peer(session.peer)
            log.warning(
                "%s: refused: malformed message tag %r in %s",
                peer,
                entry,
                header,
                extra=fields(peer=peer),
            )
            shown = "".join(c if c.isprintable() else "?" for c in entry)[:64]
            return (
                f'554 5.6.0 {header}: "{shown}" is not a message tag (write name=value, '
                "each 1 to 256 letters, digits, _ or -)"
            )
        now = self._clock()
        address = client_address(session.peer)
        client_ip = str(address) if address else "unknown"
        user = session.auth_data if isinstance(session.auth_data, str) else None
        decision = await self._rewriter.decide(controls.content, config_set)
        tracked = decision.plan is not None
        copies = copies_for(envelope.rcpt_tos, tracked=tracked, new_id=self._new_id)
        section = parse_header_section(original)
        # One copy: its mail object whole. Several: theirs without id and recipients,
        # filled in for each copy as it goes out (`pixelpost.core.mail.for_copy`).
        single = copies[0] if len(copies) == 1 else None
        mail = mail_object(
            message_id=single.id if single else "",
            sent_at=now,
            source=sender,
            destination=single.recipients if single else (),
            headers=[(f.name, f.value(original)) for f in section.fields],
            common=common_headers(original[: section.body_offset]),
            config_set=config_set.name if config_set else None,
            message_tags=controls.tags,
            source_ip=client_ip,
            caller_identity=user or client_ip,
        )
        received = now.timestamp()
        spooled = SpooledEnvelope(
            id=copies[0].id,
            mail_from=sender,
            copies=copies,
            mail_options=tuple(envelope.mail_options),
            config_set=config_set.name if config_set else None,
            received_at=received,
            expires_at=received + self._config.relay.max_queue_lifetime,
            mail=dumps(mail),
            rendering_failure=decision.failure,
            tracking=(
                Tracking(
                    base_url=self._config.tracking_url(config_set),
                    open=config_set.open_tracking,
                    click=config_set.click_tracking,
                )
                if tracked and config_set is not None
                else None
            ),
            trace=Trace(
                helo=session.host_name,
                client_ip=client_ip,
                hostname=self._config.relay.hostname,
                protocol=protocol_name(
                    esmtp=session.extended_smtp,
                    tls=session.ssl is not None,
                    authenticated=bool(session.authenticated),
                    smtputf8=envelope.smtp_utf8,
                ),
            ),
        )
        about = fields(message_id=spooled.id, peer=format_peer(session.peer))
        if decision.failure is not None:
            log.warning("%s: tracking left out: %s", spooled.id, decision.failure, extra=about)
        log.info(
            "%s: from=<%s> to=%d copies=%d size=%d config_set=%s client=%s",
            spooled.id,
            sender,
            len(envelope.rcpt_tos),
            len(copies),
            len(original),
            spooled.config_set or "-",
            client_ip,
            extra=about,
        )
        return await self._delivery.submit(
            Submission(envelope=spooled, content=controls.content, plan=decision.plan)
        )

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
