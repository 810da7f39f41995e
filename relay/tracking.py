"""Tracking, in two steps: planned once when a message is accepted, rendered into each
recipient's copy when that copy is sent.

A message with something to track becomes one copy per recipient, each with its own
message id, so that the pixel and every link say whose they are. Otherwise one copy
goes to all recipients under one message id, as SES does. Copies are made from the one
original the spool keeps, one at a time as they go out, so that neither memory nor the
spool grows with the number of recipients.

Planning and rendering a large message run on threads of their own, so that its
rewrite never holds up the event loop, and so never another client's session; a small
one takes a few milliseconds, less than a thread's hand-over would cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pixelpost.config import ConfigSet
from pixelpost.config.records import SignedInput
from pixelpost.core.dkim import (
    SignatureInfo,
    Signer,
    dkim_signatures,
    from_domain,
    without_signatures,
)
from pixelpost.core.headers import parse_header_section, received_field, remove_fields
from pixelpost.core.html import Link
from pixelpost.core.overrides import NONE as NO_OVERRIDES
from pixelpost.core.overrides import Overrides
from pixelpost.core.rewrite import MessagePlan, RewriteFailure, plan_message
from pixelpost.core.tokens import TokenCodec
from pixelpost.logs import fields
from relay.outbound.spoolfile import Copy, Envelope, Tracking

log = logging.getLogger(__name__)

T = TypeVar("T")

PLAN_THREADS = 1
"""Threads planning newly accepted large messages (apart from rendering: a long
delivery never makes a client wait for its 250)."""
RENDER_THREADS = 1
"""Threads rendering copies for delivery. One: the interpreter runs one thread at a time
anyway, and each more competes with the event loop for it."""
INLINE_BYTES = 256 * 1024
"""Messages up to this size are planned and rendered on the event loop (a 100 KB
newsletter in about 2 ms); larger ones on the threads."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Choices:
    """What one message gets: its configuration set's settings, as its per-message
    control headers override them (`pixelpost.core.overrides`)."""

    open: bool = False
    links: bool = False
    """Links in HTML parts."""
    text_links: bool = False
    """Links in text/plain parts."""
    unsubscribe: bool = False

    @property
    def any(self) -> bool:
        return self.open or self.links or self.text_links or self.unsubscribe


def choices_for(config_set: ConfigSet | None, overrides: Overrides = NO_OVERRIDES) -> Choices:
    """The set's settings, overridden for one message (nothing without a set)."""
    if config_set is None:
        return Choices()

    def pick(override: bool | None, setting: bool) -> bool:
        return setting if override is None else override

    return Choices(
        open=pick(overrides.open, config_set.open_tracking),
        links=pick(overrides.html_links, config_set.click_tracking),
        text_links=pick(overrides.text_links, config_set.track_text_links),
        unsubscribe=pick(overrides.unsubscribe, config_set.unsubscribe),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """How a message is to be tracked."""

    plan: MessagePlan | None
    """None: every copy's body is the message's as it came."""
    unsubscribe_fields: bool = False
    """Each copy gets List-Unsubscribe fields of its own (so one copy per recipient)."""
    failure: str | None = None
    """Why tracking was left out, for a Rendering Failure event; None when it was not."""
    content: bytes | None = None
    """The message to keep instead of the one that came: its DKIM signatures removed,
    for pixelpost to sign each copy again ("resign"). None: the one that came."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Signing:
    """DKIM: what signs each copy last (None without keys), and what becomes of a
    message that arrives signed already (`dkim.signed_input`)."""

    signer: Signer | None = None
    signed_input: SignedInput | None = None

    def policy(self, content: bytes) -> SignedInput:
        """`dkim.signed_input`, or by default "resign" when there is a key for the From
        domain, else "skip-tracking". "resign" with no key for the From domain is
        "skip-tracking" too: nothing would sign the message again."""
        if self.signed_input is not None and self.signed_input != "resign":
            return self.signed_input
        keyed = self.signer is not None and self.signer.key_domain(content) is not None
        return "resign" if keyed else "skip-tracking"

    def signing_domain(self, content: bytes) -> str | None:
        """The From domain (in A-labels) of a message that a key signs; None if none."""
        if self.signer is None:
            return None
        domain = from_domain(content)
        return domain if domain is not None and self.signer.covering(domain) else None


def _plan(content: bytes, chosen: Choices) -> MessagePlan | str:
    """The tracking plan of `content`, or why there is none."""
    try:
        return plan_message(
            content,
            links=chosen.links,
            pixel=chosen.open,
            text_links=chosen.text_links,
            unsubscribe=chosen.unsubscribe,
        )
    except RewriteFailure as exc:
        return str(exc)
    except Exception as exc:  # a bug in the rewrite must not cost the mail
        log.exception("tracking rewrite failed unexpectedly; delivering the original")
        return f"internal error: {exc!r}"


def _unsubscribe_fields(content: bytes, chosen: Choices, config_set: ConfigSet) -> bool:
    """Whether copies get pixelpost's List-Unsubscribe fields: when the set offers
    unsubscribes, unless the message has its own (and the set does not override it)."""
    if not chosen.unsubscribe:
        return False
    if config_set.unsubscribe_override:
        return True
    section = parse_header_section(content)
    return next(section.find("list-unsubscribe"), None) is None


def decide(
    content: bytes,
    config_set: ConfigSet | None,
    signing: Signing | None = None,
    chosen: Choices | None = None,
) -> Decision:
    """Plan the tracking of `content` for its configuration set (as `chosen` overrides
    it for this message). A message that a DKIM signature covers is tracked only as
    `signing` says (the rewrite breaks the signature); one that tracking would not
    change keeps its signature as it is."""
    chosen = choices_for(config_set) if chosen is None else chosen
    if config_set is None or not chosen.any:
        return Decision(plan=None)
    fields = _unsubscribe_fields(content, chosen, config_set)
    planned = _plan(content, chosen)
    failure = planned if isinstance(planned, str) else None
    plan = None if isinstance(planned, str) or not planned.changes else planned
    if plan is None and not fields:
        return Decision(plan=None, failure=failure)
    signatures = dkim_signatures(content)
    if not signatures:
        return Decision(plan=plan, unsubscribe_fields=fields, failure=failure)
    return _signed_input(
        content,
        plan=plan,
        fields=fields,
        chosen=chosen,
        signatures=signatures,
        signing=signing or Signing(),
        failure=failure,
    )


def _signed_input(
    content: bytes,
    *,
    plan: MessagePlan | None,
    fields: bool,
    chosen: Choices,
    signatures: list[SignatureInfo],
    signing: Signing,
    failure: str | None,
) -> Decision:
    """The decision for a message that tracking would change and a DKIM signature
    covers (a body change breaks it, and so may a field added), by
    `dkim.signed_input`."""
    policy = signing.policy(content)
    if policy == "track":  # the signature breaks, as configured
        return Decision(plan=plan, unsubscribe_fields=fields, failure=failure)
    if policy == "skip-tracking":
        signers = ", ".join(sorted({signature.domain for signature in signatures}))
        why = (
            "dkim.signed_input = skip-tracking"
            if signing.signed_input == "skip-tracking"
            else "no DKIM key for its From domain to sign it again"
        )
        return Decision(
            plan=None,
            failure=f"DKIM-signed by {signers}: sent untouched, without tracking ({why})",
        )
    unsigned = without_signatures(content)
    replanned = _plan(unsigned, chosen)
    if isinstance(replanned, str):
        if not fields:  # sent as it came, signature and all
            return Decision(plan=None, failure=replanned)
        return Decision(plan=None, unsubscribe_fields=True, failure=replanned, content=unsigned)
    return Decision(
        plan=replanned if replanned.changes else None,
        unsubscribe_fields=fields,
        failure=failure,
        content=unsigned,
    )


def copies_for(
    recipients: Sequence[str], *, per_recipient: bool, new_id: Callable[[], str]
) -> tuple[Copy, ...]:
    """The copies of a message: one per recipient when tracked or sent from a return
    path of its own (VERP), else one for all."""
    if per_recipient:
        return tuple(Copy(id=new_id(), recipients=(recipient,)) for recipient in recipients)
    return (Copy(id=new_id(), recipients=tuple(recipients)),)


def render_copy(
    envelope: Envelope,
    content: bytes,
    copy: Copy,
    *,
    plan: MessagePlan | None,
    codec: TokenCodec,
) -> bytes:
    """One copy as it goes upstream: `Received:` on top, then the message, with this
    copy's pixel, links and unsubscribe when it is tracked."""
    body = content
    if (tracking := envelope.tracking) is not None:
        unsubscribe = _unsubscribe_urls(envelope, tracking, copy, codec)
        if plan is not None:
            body = _tracked(
                plan, tracking, copy.id, codec, unsubscribe[0] if unsubscribe else None
            )
        if unsubscribe is not None and tracking.unsubscribe and tracking.unsubscribe.headers:
            body = with_unsubscribe_fields(body, *unsubscribe)
    trace = envelope.trace
    if trace is None:
        return body
    return (
        received_field(
            helo=trace.helo,
            client_ip=trace.client_ip,
            hostname=trace.hostname,
            protocol=trace.protocol,
            queue_id=copy.id,
            recipient=copy.recipients[0] if len(copy.recipients) == 1 else None,
            when=_received(envelope),
        )
        + body
    )


def _unsubscribe_urls(
    envelope: Envelope, tracking: Tracking, copy: Copy, codec: TokenCodec
) -> tuple[str, str | None] | None:
    """The copy's unsubscribe URL and `mailto:` URL (None without an intake domain);
    None when it has no unsubscribe (or is no copy of one, which cannot happen)."""
    unsubscribe = tracking.unsubscribe
    if unsubscribe is None or len(copy.recipients) != 1 or envelope.config_set is None:
        return None
    token = codec.unsubscribe_token(
        copy.id,
        address=copy.recipients[0],
        config_set=envelope.config_set,
        account=unsubscribe.account,
    )
    mailto = None
    if unsubscribe.mailto_domain is not None:
        mailto = f"mailto:{codec.unsubscribe_address(copy.id, unsubscribe.mailto_domain)}"
    return f"{tracking.base_url}/u/{token}", mailto


def with_unsubscribe_fields(message: bytes, url: str, mailto: str | None) -> bytes:
    """`message` with RFC 8058's one-click fields on top of its header section, in place
    of any it had:

        List-Unsubscribe: <https://…/u/…>,
         <mailto:u-…@…>
        List-Unsubscribe-Post: List-Unsubscribe=One-Click
    """
    section = parse_header_section(message)
    own = [f for f in section.fields if f.name.lower() in _UNSUBSCRIBE_FIELDS]
    if own:
        message = remove_fields(message, own)
    eol = b"\r\n" if b"\r\n" in message[: section.body_offset or len(message)] else b"\n"
    value = f"<{url}>" + (f",{eol.decode()} <{mailto}>" if mailto else "")
    return (
        f"List-Unsubscribe: {value}".encode("ascii")
        + eol
        + b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
        + eol
        + message
    )


_UNSUBSCRIBE_FIELDS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


def return_path(envelope: Envelope, copy: Copy, codec: TokenCodec) -> str:
    """The envelope sender of `copy`: its own return path (VERP) when its configuration
    set has a return-path domain, else the message's."""
    if envelope.return_path is None:
        return envelope.mail_from
    return codec.return_address(copy.id, envelope.return_path)


def _received(envelope: Envelope) -> datetime:
    return datetime.fromtimestamp(envelope.received_at, UTC)


def _tracked(
    plan: MessagePlan,
    tracking: Tracking,
    message_id: str,
    codec: TokenCodec,
    unsubscribe_url: str | None,
) -> bytes:
    signer = codec.signer(message_id)
    base_url = tracking.base_url

    def click_url(link: Link) -> str:
        return f"{base_url}/c/{signer.click_token(link.link_index, link.url, link.tags)}"

    return plan.render(
        open_url=f"{base_url}/o/{signer.open_token()}" if tracking.open else None,
        click_url=click_url if tracking.click or tracking.text_click else None,
        unsubscribe_url=unsubscribe_url,
    )


class Rewriter:
    """Plans and renders a large message on threads of its own; a small one (most mail)
    at once, where a thread's hand-over would cost more than the work."""

    def __init__(
        self,
        *,
        codec: TokenCodec,
        signing: Signing | None = None,
        inline_bytes: int = INLINE_BYTES,
    ) -> None:
        self._codec = codec
        self._signing = signing or Signing()
        self._inline_bytes = inline_bytes
        self._planning = ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="plan")
        self._rendering = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="render")

    async def _run(self, executor: ThreadPoolExecutor, size: int, work: Callable[[], T]) -> T:
        if size <= self._inline_bytes:
            return work()
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    def signing_domain(self, content: bytes) -> str | None:
        """The From domain (in A-labels) of a message whose copies a DKIM key signs."""
        return self._signing.signing_domain(content)

    def return_path(self, envelope: Envelope, copy: Copy) -> str:
        """The envelope sender `copy` goes out from (see `return_path`)."""
        return return_path(envelope, copy, self._codec)

    async def decide(
        self, content: bytes, config_set: ConfigSet | None, chosen: Choices | None = None
    ) -> Decision:
        chosen = choices_for(config_set) if chosen is None else chosen
        if config_set is None or not chosen.any:
            return Decision(plan=None)  # no thread for a message that tracks nothing
        return await self._run(
            self._planning,
            len(content),
            lambda: decide(content, config_set, self._signing, chosen),
        )

    async def replan(self, envelope: Envelope, content: bytes) -> Decision:
        """The plan of a tracked message read back from the spool, as it was made when
        the message was accepted (planning is deterministic)."""
        tracking = envelope.tracking
        if tracking is None:
            return Decision(plan=None)
        chosen = Choices(
            open=tracking.open,
            links=tracking.click,
            text_links=tracking.text_click,
            unsubscribe=tracking.unsubscribe is not None,
        )
        try:
            plan = await self._run(
                self._rendering,
                len(content),
                lambda: plan_message(
                    content,
                    links=chosen.links,
                    pixel=chosen.open,
                    text_links=chosen.text_links,
                    unsubscribe=chosen.unsubscribe,
                ),
            )
        except Exception as exc:  # planned once already: only a bug or a new version fails
            if isinstance(exc, RewriteFailure) and envelope.rendering_failure is not None:
                # It failed when accepted too: tracked for its List-Unsubscribe alone.
                return Decision(plan=None)
            log.exception(
                "%s: cannot plan tracking again; delivering the original",
                envelope.id,
                extra=fields(message_id=envelope.id),
            )
            return Decision(plan=None, failure=f"internal error: {exc!r}")
        return Decision(plan=plan)

    async def render(
        self,
        envelope: Envelope,
        content: bytes,
        copy: Copy,
        plan: MessagePlan | None,
        finish: Callable[[bytes], T],
    ) -> tuple[T, str | None]:
        """A copy made ready to send by `finish` (a transport's `prepare`), and why its
        tracking was left out, if it was (the copy is then the message as it came)."""

        def render() -> tuple[T, str | None]:
            try:
                made = render_copy(envelope, content, copy, plan=plan, codec=self._codec)
                failure = None
            except Exception as exc:  # a bug in the rewrite must not cost the mail
                log.exception(
                    "%s: cannot render tracking; delivering the original",
                    copy.id,
                    extra=fields(message_id=copy.id),
                )
                made = render_copy(envelope, content, copy, plan=None, codec=self._codec)
                failure = f"internal error: {exc!r}"
            signer = self._signing.signer
            # Signed last, after every field pixelpost adds or removes.
            return finish(made if signer is None else signer.sign(made)), failure

        return await self._run(self._rendering, len(content), render)

    def close(self) -> None:
        self._planning.shutdown(wait=True)
        self._rendering.shutdown(wait=True)
