"""What a failure means: SES's bounce type and subtype for an SMTP refusal or a delivery
status notification's recipient, from one table of rules.

SES reports some 5xx failures as Transient (a full mailbox, a message too large, content a
filter refused): they may succeed later or after a change. The enhanced status code
(RFC 3463) decides where it says something specific; the diagnostic's words decide where
the status is generic (`x.0.0`) or missing. The first rule that matches wins; `x` matches
any number, `none` a missing status (docs/bounces.md explains each row):

| status | diagnostic words (any) | bounceType | bounceSubType |
|---|---|---|---|
| 5.1.0, 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10 | — | Permanent | NoEmail |
| 5.0.0, none | user unknown, unknown user, no such user, user not found, no mailbox, mailbox unavailable, mailbox not found, does not exist, invalid recipient, recipient not found, unknown recipient | Permanent | NoEmail |
| x.2.2 | — | Transient | MailboxFull |
| x.0.0, x.2.x, none | quota, mailbox full, mailbox is full | Transient | MailboxFull |
| x.3.4, x.2.3 | — | Transient | MessageTooLarge |
| x.0.0, x.3.x, none | too large, too big, size limit | Transient | MessageTooLarge |
| 5.7.x, 5.0.0, none | attachment | Transient | AttachmentRejected |
| 5.7.1, 5.6.x, 5.0.0, none | content, spam, blocked | Transient | ContentRejected |
| 4.x.x | — | Transient | General |
| 5.x.x | — | Permanent | General |
| x.x.x, none | — | Undetermined | Undetermined |
"""  # noqa: E501 (a table row is one line)

from __future__ import annotations

import re
from dataclasses import dataclass

NO_STATUS = "none"
"""The status pattern that matches when there is no status at all."""

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# Not inside a longer number or an IP address (`4.2.1.5`); a full stop may end the sentence.
_ENHANCED_ANYWHERE = re.compile(r"(?<!\d)(?<!\d\.)([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?<!\d)(?<!\d\.)([245])\d\d(?!\.?\d)")


@dataclass(frozen=True, kw_only=True, slots=True)
class BounceKind:
    type: str
    subtype: str
    status: str
    """The enhanced status code, given or derived from the reply code; empty when there
    was none to find."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One row of the table: it matches a status that one of `statuses` matches (`x`
    for any number, `none` for no status) and, if it has `words`, a diagnostic that
    contains one of them (lowercase)."""

    statuses: tuple[str, ...]
    words: tuple[str, ...] = ()
    type: str
    subtype: str

    def matches(self, status: tuple[int, int, int] | None, diagnostic: str) -> bool:
        if not any(_status_matches(pattern, status) for pattern in self.statuses):
            return False
        return not self.words or any(word in diagnostic for word in self.words)


def _status_matches(pattern: str, status: tuple[int, int, int] | None) -> bool:
    if pattern == NO_STATUS or status is None:
        return pattern == NO_STATUS and status is None
    return all(
        part == "x" or int(part) == number
        for part, number in zip(pattern.split("."), status, strict=True)
    )


RULES: tuple[Rule, ...] = (
    Rule(
        statuses=("5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"),
        type="Permanent",
        subtype="NoEmail",
    ),
    Rule(
        statuses=("5.0.0", NO_STATUS),
        words=(
            "user unknown",
            "unknown user",
            "no such user",
            "user not found",
            "no mailbox",
            "mailbox unavailable",
            "mailbox not found",
            "does not exist",
            "invalid recipient",
            "recipient not found",
            "unknown recipient",
        ),
        type="Permanent",
        subtype="NoEmail",
    ),
    Rule(statuses=("x.2.2",), type="Transient", subtype="MailboxFull"),
    Rule(
        statuses=("x.0.0", "x.2.x", NO_STATUS),
        words=("quota", "mailbox full", "mailbox is full"),
        type="Transient",
        subtype="MailboxFull",
    ),
    Rule(statuses=("x.3.4", "x.2.3"), type="Transient", subtype="MessageTooLarge"),
    Rule(
        statuses=("x.0.0", "x.3.x", NO_STATUS),
        words=("too large", "too big", "size limit"),
        type="Transient",
        subtype="MessageTooLarge",
    ),
    Rule(
        statuses=("5.7.x", "5.0.0", NO_STATUS),
        words=("attachment",),
        type="Transient",
        subtype="AttachmentRejected",
    ),
    Rule(
        statuses=("5.7.1", "5.6.x", "5.0.0", NO_STATUS),
        words=("content", "spam", "blocked"),
        type="Transient",
        subtype="ContentRejected",
    ),
    Rule(statuses=("4.x.x",), type="Transient", subtype="General"),
    Rule(statuses=("5.x.x",), type="Permanent", subtype="General"),
    Rule(statuses=("x.x.x", NO_STATUS), type="Undetermined", subtype="Undetermined"),
)
"""The table of the module docstring and of docs/bounces.md, first match wins; the last
row matches everything."""


def rules_table() -> str:
    """`RULES` as the Markdown table the docstring and docs/bounces.md show."""
    lines = [
        "| status | diagnostic words (any) | bounceType | bounceSubType |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {', '.join(r.statuses)} | {', '.join(r.words) or '—'} | {r.type} | {r.subtype} |"
        for r in RULES
    ]
    return "\n".join(lines) + "\n"


def _parse_status(text: str) -> tuple[int, int, int] | None:
    match = _ENHANCED.match(text.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def _status_in(diagnostic: str) -> tuple[int, int, int] | None:
    match = _ENHANCED_ANYWHERE.search(diagnostic)
    if match is not None:
        return int(match[1]), int(match[2]), int(match[3])
    code = _REPLY_CODE.search(diagnostic)
    return None if code is None else (int(code[1]), 0, 0)


def _shown(status: tuple[int, int, int] | None) -> str:
    return "" if status is None else ".".join(map(str, status))


def find_status(text: str) -> str | None:
    """The first enhanced status code in `text` (`(#5.2.2)`, `550 5.1.1 …`), with the
    numbers as numbers (`5.01.1` is 5.1.1); None when it has none."""
    match = _ENHANCED_ANYWHERE.search(text)
    return None if match is None else _shown((int(match[1]), int(match[2]), int(match[3])))


def diagnostic_status(diagnostic: str) -> str | None:
    """The status a diagnostic gives (`smtp; 550 5.1.1 …`), else `x.0.0` of its reply
    code (`smtp; 550 No such user` is 5.0.0); None when it has neither."""
    found = _status_in(diagnostic)
    return None if found is None else _shown(found)


def _rule(status: tuple[int, int, int] | None, diagnostic: str) -> Rule:
    lowered = diagnostic.lower()
    return next(r for r in RULES if r.matches(status, lowered))


def _effective(status: str, diagnostic: str) -> tuple[int, int, int] | None:
    parsed = _parse_status(status)
    return parsed if parsed is not None else _status_in(diagnostic)


def matching_rule(status: str, diagnostic: str | None) -> Rule:
    """The row of `RULES` that decides `classify(status, diagnostic)`."""
    text = diagnostic or ""
    return _rule(_effective(status, text), text)


def classify(status: str, diagnostic: str | None) -> BounceKind:
    """The bounce type of a report's recipient: its Status (`5.1.1`; may be empty), else
    the status its diagnostic gives, with the diagnostic's words."""
    text = diagnostic or ""
    effective = _effective(status, text)
    rule = _rule(effective, text)
    return BounceKind(type=rule.type, subtype=rule.subtype, status=_shown(effective))


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 status of a reply: the one it gives, else one from its code."""
    match = _ENHANCED.match(text.strip())
    return match.group(0) if match else f"{code // 100}.0.0"


def bounce_kind(code: int, text: str) -> BounceKind:
    """The bounce type of a refusal `code text` from an upstream."""
    status = enhanced_status(code, text)
    rule = _rule(_parse_status(status), text)
    # The status as the reply wrote it (`5.01.01` stays so), as the events always showed.
    return BounceKind(type=rule.type, subtype=rule.subtype, status=status)
