"""The aiosmtpd handler: refuses clients that may not relay, reads the configuration set
of each message, and hands the message to delivery.

Outcomes are SMTP replies, returned as strings, as aiosmtpd's hooks expect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from pixelpost.config import Config, ConfigSet
from pixelpost.core.addresses import mailbox_problem
from pixelpost.core.dkim import dkim_signatures
from pixelpost.core.events import dumps
from pixelpost.core.headers import (
    CONTROL_HEADERS,
    Controls,
    extract_controls,
    parse_header_section,
    protocol_name,
)
from pixelpost.core.ids import new_message_id
from pixelpost.core.mail import JSON, common_headers, mail_object
from pixelpost.core.overrides import BadOverride, read_overrides
from pixelpost.logs import fields
from relay import replies
from relay.frontdoor.access import AccessPolicy, client_address, format_peer
from relay.frontdoor.auth import Accounts
from relay.frontdoor.hooks import Hooks
from relay.intake.returns import Returns
from relay.outbound.handoff import Delivery, Submission
from relay.outbound.spoolfile import Copy, Trace, Tracking, Unsubscribe
from relay.outbound.spoolfile import Envelope as SpooledEnvelope
from relay.tracking import Choices, Decision, Rewriter, choices_for, copies_for

log = logging.getLogger(__name__)


class UnknownConfigSet(LookupError):
    """A message named a configuration set that is not configured."""


class RelayHandler(Hooks):
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
        returns: Returns | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._returns = returns
        self._accounts = accounts or Accounts(config.relay.users)
        self._access = access
        self._delivery = delivery
        self._rewriter = rewriter
        self._clock = clock
        self._new_id = new_id
        self._recipients_limit = config.relay.max_recipients

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
            return replies.bad_sender(problem)
        user = session.auth_data if session.authenticated else None
        if isinstance(user, str) and not self._accounts.may_send_from(user, address):
            peer = format_peer(session.peer)
            log.warning(
                "%s: user %s may not send as <%s>", peer, user, address, extra=fields(peer=peer)
            )
            return replies.sender_not_allowed(address, user)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

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
            return replies.RELAY_DENIED
        if problem := mailbox_problem(address, smtputf8=envelope.smtp_utf8):
            peer = format_peer(session.peer)
            log.warning(
                "%s: bad recipient %r: %s", peer, address, problem, extra=fields(peer=peer)
            )
            return replies.bad_recipient(problem)
        return self.add_recipient(envelope, address, rcpt_options, limit=self._recipients_limit)

    async def take(self, session: Session, envelope: Envelope) -> str:
        """The stages of taking a message in: its control headers checked, its tracking
        planned and its copies named, then the handover to delivery, whose reply is the
        client's (250 only once the message is safe on disk)."""
        assert envelope.original_content is not None
        assert envelope.mail_from is not None
        # aiosmtpd reports the null reverse path (MAIL FROM:<>) as "<>".
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        controls = extract_controls(envelope.original_content)
        read = self._read_controls(session, controls)
        if isinstance(read, str):
            return read
        config_set, chosen = read
        if refusal := self._signing_refusal(session, controls.content):
            return refusal
        now = self._clock()
        client_ip = _client_ip(session)
        if not sender:
            return await self._accept_notification(session, envelope, controls, client_ip)
        decision = await self._rewriter.decide(controls.content, config_set, chosen)
        own_return_path = config_set is not None and config_set.return_path_domain is not None
        copies = copies_for(
            envelope.rcpt_tos,
            per_recipient=(
                decision.plan is not None or decision.unsubscribe_fields or own_return_path
            ),
            new_id=self._new_id,
        )
        spooled = self._spooled(
            session,
            envelope,
            sender=sender,
            client_ip=client_ip,
            controls=controls,
            config_set=config_set,
            chosen=chosen,
            decision=decision,
            copies=copies,
            received=now,
        )
        _log_accepted(session, envelope, spooled, client_ip)
        if controls.dropped:
            log.info(
                "%s: left out %r before the header section (an archive's line)",
                spooled.id,
                controls.dropped[:80],
                extra=fields(message_id=spooled.id),
            )
        content = _kept(controls, decision)
        return await self._delivery.submit(
            Submission(envelope=spooled, content=content, plan=decision.plan)
        )

    def _read_controls(
        self, session: Session, controls: Controls
    ) -> tuple[ConfigSet | None, Choices] | str:
        """The message's configuration set and what it tracks, as its control headers
        say; or the refusal that names the header that is wrong."""
        try:
            config_set = self._config_set(controls.config_set)
        except UnknownConfigSet:
            return _refuse_config_set(session, controls.config_set or "")
        if controls.rejected_tags:
            return _refuse_tag(session, *controls.rejected_tags[0])
        try:
            overrides = read_overrides(controls.overrides)
        except BadOverride as exc:
            return _refuse_override(session, replies.bad_override(str(exc)))
        if config_set is None and (turned_on := _turned_on(controls)):
            return _refuse_override(session, replies.override_without_config_set(turned_on))
        return config_set, choices_for(config_set, overrides)

    def _signing_refusal(self, session: Session, content: bytes) -> str | None:
        """The refusal of a message that pixelpost would sign (DKIM) for a From domain
        the authenticated user may not send as; None when it may go on."""
        user = session.auth_data if session.authenticated else None
        if not isinstance(user, str):
            return None
        domain = self._rewriter.signing_domain(content)
        if domain is None or self._accounts.may_sign_for(user, domain):
            return None
        return _refuse_signing(session, user, domain)

    async def _accept_notification(
        self, session: Session, envelope: Envelope, controls: Controls, client_ip: str
    ) -> str:
        """Mail from the null reverse path: a notification (a Postfix in front sends its
        DSNs through its relay host), relayed as it came, never tracked, no Send. When
        it reports on a copy pixelpost sent, that copy's Bounce is recorded first, as
        the intake would (and the client told to retry when the store cannot)."""
        message_id = self._new_id()
        # One for a return path goes on to the intake, which takes it there.
        if self._returns is not None and not self._returns.addressed_to_intake(envelope.rcpt_tos):
            try:
                await self._returns.process(
                    recipients=envelope.rcpt_tos,
                    content=controls.original,
                    about=message_id,
                    sender="",
                )
            except Exception as exc:  # the report is the point: the client sends it again
                log.error(
                    "%s: a notification's report not recorded: %s",
                    message_id,
                    exc,
                    extra=fields(message_id=message_id),
                )
                return replies.CANNOT_QUEUE
        received_at = self._clock().timestamp()
        spooled = SpooledEnvelope(
            id=message_id,
            mail_from="",
            copies=(Copy(id=message_id, recipients=tuple(envelope.rcpt_tos)),),
            mail_options=tuple(envelope.mail_options),
            received_at=received_at,
            expires_at=received_at + self._config.relay.max_queue_lifetime,
            notification=True,
            trace=self._trace(session, envelope, client_ip),
        )
        _log_accepted(session, envelope, spooled, client_ip)
        return await self._delivery.submit(
            Submission(envelope=spooled, content=controls.content, plan=None)
        )

    def _spooled(
        self,
        session: Session,
        envelope: Envelope,
        *,
        sender: str,
        client_ip: str,
        controls: Controls,
        config_set: ConfigSet | None,
        chosen: Choices,
        decision: Decision,
        copies: tuple[Copy, ...],
        received: datetime,
    ) -> SpooledEnvelope:
        """What the spool keeps beside the message: its copies, its `mail` object, how
        its copies are tracked and how it came in."""
        assert envelope.original_content is not None
        mail = _mail(
            session,
            controls.original,
            sender=sender,
            client_ip=client_ip,
            controls=controls,
            config_set=config_set,
            copies=copies,
            sent_at=received,
        )
        received_at = received.timestamp()
        return SpooledEnvelope(
            id=copies[0].id,
            mail_from=sender,
            copies=copies,
            mail_options=tuple(envelope.mail_options),
            config_set=config_set.name if config_set else None,
            received_at=received_at,
            expires_at=received_at + self._config.relay.max_queue_lifetime,
            mail=dumps(mail),
            rendering_failure=decision.failure,
            tracking=(
                self._tracking(config_set, chosen, decision)
                if decision.plan is not None or decision.unsubscribe_fields
                else None
            ),
            trace=self._trace(session, envelope, client_ip),
            return_path=config_set.return_path_domain if config_set else None,
        )

    def _tracking(
        self, config_set: ConfigSet | None, chosen: Choices, decision: Decision
    ) -> Tracking | None:
        """How the copies of a tracked message get their pixel, links and unsubscribe
        (none without a configuration set)."""
        if config_set is None:
            return None
        unsubscribe = None
        if chosen.unsubscribe:
            unsubscribe = Unsubscribe(
                account=config_set.unsubscribe_scope == "account",
                mailto_domain=self._mailto_domain(config_set),
                headers=decision.unsubscribe_fields,
            )
        return Tracking(
            base_url=self._config.tracking_url(config_set),
            open=chosen.open,
            click=chosen.links,
            text_click=chosen.text_links,
            unsubscribe=unsubscribe,
        )

    def _mailto_domain(self, config_set: ConfigSet) -> str | None:
        """Where unsubscribe mail for `config_set` goes: its return-path domain, else
        the intake's first domain; None without an intake (the URL alone is offered)."""
        intake = self._config.intake
        if intake is None:
            return None
        return config_set.return_path_domain or next(iter(intake.domains), None)

    def _trace(self, session: Session, envelope: Envelope, client_ip: str) -> Trace:
        """What each copy's `Received:` field says about how the message came in."""
        return Trace(
            helo=session.host_name,
            client_ip=client_ip,
            hostname=self._config.relay.hostname,
            protocol=protocol_name(
                esmtp=session.extended_smtp,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
                smtputf8=envelope.smtp_utf8,
            ),
        )

    def _config_set(self, requested: str | None) -> ConfigSet | None:
        name = requested if requested is not None else self._config.default_config_set
        if name is None:
            return None
        config_set = self._config.config_sets.get(name)
        if config_set is None:
            raise UnknownConfigSet(name)
        return config_set


def _kept(controls: Controls, decision: Decision) -> bytes:
    """What goes on: the message without its control headers; signed again without its
    signatures ("resign"); or, sent untouched with a signature that covers a control
    header, as it came, control headers and all, so that the signature still holds."""
    if decision.content is not None:
        return decision.content
    if decision.plan is None and controls.content != controls.original:
        covered = {name for s in dkim_signatures(controls.original) for name in s.headers}
        if covered & CONTROL_HEADERS:
            return controls.original
    return controls.content


def _turned_on(controls: Controls) -> str | None:
    """The first control header that turns some tracking on (which a message without a
    configuration set cannot have); None if none does."""
    for name, value in controls.overrides:
        single = read_overrides([(name, value)])
        if single.open or single.html_links or single.text_links or single.unsubscribe:
            return name
    return None


def _refuse_override(session: Session, reply: str) -> str:
    """Refuse a message whose per-message tracking controls cannot be applied."""
    peer = format_peer(session.peer)
    log.warning("%s: refused: %s", peer, reply[10:], extra=fields(peer=peer))
    return reply


def _client_ip(session: Session) -> str:
    """The client's IP address as the events and the `Received:` field show it."""
    address = client_address(session.peer)
    return str(address) if address else "unknown"


def _mail(
    session: Session,
    original: bytes,
    *,
    sender: str,
    client_ip: str,
    controls: Controls,
    config_set: ConfigSet | None,
    copies: tuple[Copy, ...],
    sent_at: datetime,
) -> JSON:
    """The message's SES `mail` object. One copy: its mail object whole. Several: theirs
    without id and recipients, filled in for each copy as it goes out
    (`pixelpost.core.mail.for_copy`)."""
    section = parse_header_section(original)
    single = copies[0] if len(copies) == 1 else None
    user = session.auth_data if isinstance(session.auth_data, str) else None
    return mail_object(
        message_id=single.id if single else "",
        sent_at=sent_at,
        source=sender,
        destination=single.recipients if single else (),
        headers=[(f.name, f.value(original)) for f in section.fields],
        common=common_headers(original[: section.body_offset]),
        config_set=config_set.name if config_set else None,
        message_tags=controls.tags,
        source_ip=client_ip,
        caller_identity=user or client_ip,
    )


def _refuse_config_set(session: Session, name: str) -> str:
    """Refuse a message that names a configuration set that is not configured."""
    peer = format_peer(session.peer)
    log.warning("%s: unknown configuration set %r", peer, name, extra=fields(peer=peer))
    return replies.unknown_config_set(name)


def _refuse_signing(session: Session, user: str, domain: str) -> str:
    """Refuse a message whose From field names a domain that pixelpost signs for but
    that the authenticated user may not send as (their from_domains)."""
    peer = format_peer(session.peer)
    log.warning(
        "%s: user %s may not send mail signed for %s", peer, user, domain, extra=fields(peer=peer)
    )
    return replies.signing_not_allowed(domain, user)


def _refuse_tag(session: Session, header: str, entry: str) -> str:
    """Refuse a message whose tag `header` holds an `entry` that is not `name=value`
    in SES's character set."""
    peer = format_peer(session.peer)
    log.warning(
        "%s: refused: malformed message tag %r in %s", peer, entry, header, extra=fields(peer=peer)
    )
    return replies.malformed_tag(header, entry)


def _log_accepted(
    session: Session, envelope: Envelope, spooled: SpooledEnvelope, client_ip: str
) -> None:
    """One line for each message handed over, and one more when its tracking was left
    out."""
    assert envelope.original_content is not None
    about = fields(message_id=spooled.id, peer=format_peer(session.peer))
    if spooled.rendering_failure is not None:
        log.warning(
            "%s: tracking left out: %s", spooled.id, spooled.rendering_failure, extra=about
        )
    log.info(
        "%s: from=<%s> to=%d copies=%d size=%d config_set=%s client=%s",
        spooled.id,
        spooled.mail_from,
        len(envelope.rcpt_tos),
        len(spooled.copies),
        len(envelope.original_content),
        spooled.config_set or "-",
        client_ip,
        extra=about,
    )
