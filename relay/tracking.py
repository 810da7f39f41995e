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
from pixelpost.core.headers import received_field
from pixelpost.core.html import Link
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
class Decision:
    """How a message is to be tracked."""

    plan: MessagePlan | None
    """None: every copy is the message as it came."""
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


def _tracks(config_set: ConfigSet | None) -> bool:
    return config_set is not None and (config_set.open_tracking or config_set.click_tracking)


def _plan(content: bytes, config_set: ConfigSet) -> MessagePlan | str:
    """The tracking plan of `content`, or why there is none."""
    try:
        return plan_message(
            content, links=config_set.click_tracking, pixel=config_set.open_tracking
        )
    except RewriteFailure as exc:
        return str(exc)
    except Exception as exc:  # a bug in the rewrite must not cost the mail
        log.exception("tracking rewrite failed unexpectedly; delivering the original")
        return f"internal error: {exc!r}"


def decide(
    content: bytes, config_set: ConfigSet | None, signing: Signing | None = None
) -> Decision:
    """Plan the tracking of `content` for its configuration set. A message that a DKIM
    signature covers is tracked only as `signing` says (the rewrite breaks the
    signature); one that tracking would not change keeps its signature as it is."""
    if config_set is None or not _tracks(config_set):
        return Decision(plan=None)
    plan = _plan(content, config_set)
    if isinstance(plan, str):
        return Decision(plan=None, failure=plan)
    if not plan.changes:
        return Decision(plan=None)
    signatures = dkim_signatures(content)
    if not signatures:
        return Decision(plan=plan)
    return _signed_input(content, plan, config_set, signatures, signing or Signing())


def _signed_input(
    content: bytes,
    plan: MessagePlan,
    config_set: ConfigSet,
    signatures: list[SignatureInfo],
    signing: Signing,
) -> Decision:
    """The decision for a message that tracking would change and a DKIM signature
    covers (any body change breaks it), by `dkim.signed_input`."""
    policy = signing.policy(content)
    if policy == "track":
        return Decision(plan=plan)  # the signature breaks, as configured
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
    replanned = _plan(unsigned, config_set)
    if isinstance(replanned, str):
        return Decision(plan=None, failure=replanned)  # sent as it came, signature and all
    return Decision(plan=replanned if replanned.changes else None, content=unsigned)


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
    copy's pixel and links when it is tracked."""
    body = content
    if envelope.tracking is not None and plan is not None:
        body = _tracked(plan, envelope.tracking, copy.id, codec)
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


def return_path(envelope: Envelope, copy: Copy, codec: TokenCodec) -> str:
    """The envelope sender of `copy`: its own return path (VERP) when its configuration
    set has a return-path domain, else the message's."""
    if envelope.return_path is None:
        return envelope.mail_from
    return codec.return_address(copy.id, envelope.return_path)


def _received(envelope: Envelope) -> datetime:
    return datetime.fromtimestamp(envelope.received_at, UTC)


def _tracked(plan: MessagePlan, tracking: Tracking, message_id: str, codec: TokenCodec) -> bytes:
    signer = codec.signer(message_id)
    base_url = tracking.base_url

    def click_url(link: Link) -> str:
        return f"{base_url}/c/{signer.click_token(link.link_index, link.url, link.tags)}"

    return plan.render(
        open_url=f"{base_url}/o/{signer.open_token()}" if tracking.open else None,
        click_url=click_url if tracking.click else None,
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

    async def decide(self, content: bytes, config_set: ConfigSet | None) -> Decision:
        if not _tracks(config_set):
            return Decision(plan=None)  # no thread for a set that tracks nothing
        return await self._run(
            self._planning, len(content), lambda: decide(content, config_set, self._signing)
        )

    async def replan(self, envelope: Envelope, content: bytes) -> Decision:
        """The plan of a tracked message read back from the spool, as it was made when
        the message was accepted (planning is deterministic)."""
        tracking = envelope.tracking
        if tracking is None:
            return Decision(plan=None)
        try:
            plan = await self._run(
                self._rendering,
                len(content),
                lambda: plan_message(content, links=tracking.click, pixel=tracking.open),
            )
        except Exception as exc:  # planned once already: only a bug or a new version fails
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
