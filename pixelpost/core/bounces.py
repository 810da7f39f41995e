"""What a refusal means: SES's bounce type and subtype for an SMTP reply.

SES reports some 5xx refusals as Transient (a full mailbox, a message too large, content
a filter refused): they may succeed later or after a change. The enhanced status code
(RFC 3463) decides where there is one; the reply code otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, kw_only=True, slots=True)
class BounceKind:
    type: str
    subtype: str
    status: str
    """The enhanced status code, given or derived from the reply code."""


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 status of a reply: the one it gives, else one from its code."""
    match = _ENHANCED.match(text.strip())
    return match.group(0) if match else f"{code // 100}.0.0"


def bounce_kind(code: int, text: str) -> BounceKind:
    """The bounce type of a permanent refusal `code text`."""
    match = _ENHANCED.match(text.strip())
    status = match.group(0) if match else enhanced_status(code, text)
    subject_detail = status.split(".", 1)[1]
    lowered = text.lower()
    if subject_detail in ("1.1", "1.0", "1.10", "1.3", "1.6") or (
        match is None and code in (550, 553) and ("user" in lowered or "mailbox" in lowered)
    ):
        return BounceKind(type="Permanent", subtype="NoEmail", status=status)
    if (
        subject_detail in ("2.2",)
        or code == 452
        or "quota" in lowered
        or "mailbox full" in lowered
    ):
        return BounceKind(type="Transient", subtype="MailboxFull", status=status)
    if subject_detail in ("3.4", "2.3") or "too large" in lowered or "too big" in lowered:
        return BounceKind(type="Transient", subtype="MessageTooLarge", status=status)
    if subject_detail.startswith("7.") and "attachment" in lowered:
        return BounceKind(type="Transient", subtype="AttachmentRejected", status=status)
    if subject_detail in ("6.0", "7.1") and ("content" in lowered or "spam" in lowered):
        return BounceKind(type="Transient", subtype="ContentRejected", status=status)
    return BounceKind(type="Permanent", subtype="General", status=status)
