"""Per-recipient copies of a message with tracking, or the message as it came when its
configuration set tracks nothing or its HTML cannot be rewritten.

A message with something to track becomes one copy per recipient, each with its own
message id, so that the pixel and every link say whose they are. Otherwise one copy
goes to all recipients under one message id, as SES does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pixelpost.config import ConfigSet
from pixelpost.ids import new_message_id
from pixelpost.tokens import TokenCodec
from relay.html import Link
from relay.rewrite import MessagePlan, RewriteFailure, plan_message

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Copy:
    """What goes upstream in one SMTP transaction."""

    message_id: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepared:
    copies: tuple[Copy, ...]
    failure: str | None = None
    """Why tracking was left out, for a Rendering Failure event; None when it was not."""


def prepare(
    content: bytes,
    *,
    recipients: Sequence[str],
    config_set: ConfigSet | None,
    base_url: str,
    codec: TokenCodec,
    new_id: Callable[[], str] = new_message_id,
) -> Prepared:
    """The copies of `content` to deliver."""
    untouched = Prepared(
        copies=(Copy(message_id=new_id(), recipients=tuple(recipients), content=content),)
    )
    if config_set is None or not (config_set.open_tracking or config_set.click_tracking):
        return untouched
    try:
        plan = plan_message(
            content, links=config_set.click_tracking, pixel=config_set.open_tracking
        )
        if not plan.changes:
            return untouched
        copies = tuple(
            _tracked_copy(
                plan,
                recipient=recipient,
                message_id=new_id(),
                config_set=config_set,
                base_url=base_url,
                codec=codec,
            )
            for recipient in recipients
        )
    except RewriteFailure as exc:
        return Prepared(copies=untouched.copies, failure=str(exc))
    except Exception as exc:  # a bug in the rewrite must not cost the mail
        log.exception("tracking rewrite failed unexpectedly; delivering the original")
        return Prepared(copies=untouched.copies, failure=f"internal error: {exc!r}")
    return Prepared(copies=copies)


def _tracked_copy(
    plan: MessagePlan,
    *,
    recipient: str,
    message_id: str,
    config_set: ConfigSet,
    base_url: str,
    codec: TokenCodec,
) -> Copy:
    signer = codec.signer(message_id)

    def click_url(link: Link) -> str:
        return f"{base_url}/c/{signer.click_token(link.link_index, link.url, link.tags)}"

    open_url = f"{base_url}/o/{signer.open_token()}" if config_set.open_tracking else None
    return Copy(
        message_id=message_id,
        recipients=(recipient,),
        content=plan.render(
            open_url=open_url, click_url=click_url if config_set.click_tracking else None
        ),
    )
