"""The intake's aiosmtpd handler: mail for the return-path domains only, from anyone.

Mail to a copy's unsubscribe address (`u-<token>@…`, its List-Unsubscribe `mailto:`)
unsubscribes its recipient, as the tracker's one-click URL does.

The intake is the MX of the return-path domains, so any server on the Internet may
connect, and none may relay through it: a recipient outside those domains is refused
at RCPT, and a return path whose token does not verify too. A returned message is read
and its events recorded before the 250 (`relay.intake.returns`), so that what the
intake accepts is in the store; when the store cannot take it the reporting server
is told to try again.
"""

from __future__ import annotations

import collections
import logging

from aiosmtpd.smtp import SMTP, Envelope, Session

from pixelpost.core.addresses import mailbox_problem
from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import RETURN_PREFIX, UNSUBSCRIBE_PREFIX, InvalidToken, TokenCodec
from pixelpost.logs import fields
from pixelpost.store import StoreError
from relay import replies
from relay.frontdoor.access import format_peer
from relay.frontdoor.hooks import Hooks
from relay.intake.returns import NotRecordedYet, Returns

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 50
"""Return paths per returned message; a report names one."""


class IntakeHandler(Hooks):
    """aiosmtpd hooks for the intake."""

    def __init__(self, *, domains: frozenset[str], codec: TokenCodec, returns: Returns) -> None:
        super().__init__()
        self._domains = domains
        self._codec = codec
        self._returns = returns
        self.counts: collections.Counter[str] = collections.Counter()
        """Returned messages by outcome (`relay.intake.returns.Outcome.kind`), and
        `forged` return paths refused, for the metrics."""

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Reports come from the null reverse path (`<>`), feedback loops from anyone.
        if address != "<>" and (problem := mailbox_problem(address, smtputf8=envelope.smtp_utf8)):
            return replies.bad_sender(problem)
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
        peer = format_peer(session.peer)
        if problem := mailbox_problem(address, smtputf8=envelope.smtp_utf8):
            return replies.bad_recipient(problem)
        local, _, domain = address.rpartition("@")
        if domain.lower().rstrip(".") not in self._domains:
            log.warning(
                "%s: intake: refused <%s>: not a return-path domain",
                peer,
                address,
                extra=fields(peer=peer),
            )
            return replies.NOT_A_RETURN_DOMAIN
        prefix = local[: len(RETURN_PREFIX)].lower()
        if prefix in (RETURN_PREFIX, UNSUBSCRIBE_PREFIX):
            try:
                if prefix == RETURN_PREFIX:
                    self._codec.read_return_address(address)
                else:
                    self._codec.read_unsubscribe_address(address)
            except InvalidToken:
                self.counts["forged"] += 1
                log.warning(
                    "%s: intake: refused <%s>: its token does not verify",
                    peer,
                    address,
                    extra=fields(peer=peer),
                )
                return replies.NO_SUCH_RETURN_PATH
        return self.add_recipient(envelope, address, rcpt_options, limit=MAX_RECIPIENTS)

    async def take(self, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        peer = format_peer(session.peer)
        about = f"intake {new_message_id()}"
        log.info(
            "%s: from=<%s> to=%s size=%d client=%s",
            about,
            "" if envelope.mail_from == "<>" else envelope.mail_from,
            ",".join(f"<{r}>" for r in envelope.rcpt_tos),
            len(envelope.original_content),
            peer,
            extra=fields(peer=peer),
        )
        assert envelope.mail_from is not None
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        try:
            if unsubscribes := self._returns.unsubscribe_copies(envelope.rcpt_tos):
                outcome = await self._returns.unsubscribe(
                    copies=unsubscribes,
                    content=envelope.original_content,
                    about=about,
                    sender=sender,
                )
            else:
                outcome = await self._returns.process(
                    recipients=envelope.rcpt_tos,
                    content=envelope.original_content,
                    about=about,
                    sender=sender,
                )
        except NotRecordedYet as exc:
            self.counts["deferred"] += 1
            log.info("%s: deferred: %s", about, exc, extra=fields(peer=peer))
            return replies.REPORT_TOO_SOON
        except StoreError as exc:
            log.error("%s: not taken: %s", about, exc, extra=fields(peer=peer))
            return replies.CANNOT_TAKE_REPORT
        except Exception:  # a bug must not cost the report: the server sends it again
            log.exception("%s: not taken", about, extra=fields(peer=peer))
            return replies.CANNOT_TAKE_REPORT
        self.counts[outcome.kind] += 1
        return replies.REPORT_ACCEPTED
