"""Bounces that are no RFC 3464 report (qmail's, an old Postfix's, Exchange's plain
text), found by `flufl.bounce`'s detectors.

The detectors are heuristics: one (LLNL's) takes any `, a@b,` in a text for a failed
address, so an out-of-office text or a newsletter would "bounce". They are shown only
mail that says it comes from a mail system (`from_mail_system`, `bounce_subject`), and
only its first `DETECTOR_BYTES`, each line cut at 998 octets: some of their patterns
backtrack on long lines, and a bounce's text comes first.
"""

from __future__ import annotations

import logging
import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses

from flufl.bounce import all_failures

from pixelpost.core.bounces import find_status
from pixelpost.core.headers import parse_header_section as section_at
from pixelpost.core.mime import MAX_LINE
from pixelpost.core.reports.delivery import STATUS_OF_ACTION, server_ip_in
from pixelpost.core.reports.parts import (
    SUBJECT_LIMIT,
    Part,
    header_bytes,
    original_headers,
    subject,
)
from pixelpost.core.reports.records import DeliveryReport, RecipientStatus

log = logging.getLogger(__name__)

DETECTOR_BYTES = 64 * 1024
"""What the detectors see of a message."""
MAX_RECIPIENTS = 100
DIAGNOSTIC_LIMIT = 1000
"""Characters of a recipient's paragraph kept as its diagnostic."""

_MAIL_SYSTEM = re.compile(
    r"\b(mailer-daemon|postmaster|mail-daemon|mdaemon)@|mail delivery (system|subsystem)", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|returned to sender|failure notice|delivery status notification"
    r"|delivery (failure|failed|has failed|problem)|mail delivery failed|non-?delivery"
    r"|could not be delivered|mail system error",
    re.I,
)
_ORIGINAL_MARKER = re.compile(
    rb"^[ \t]*-*[ \t]*(?:below this line is a copy of the message"
    rb"|undelivered message headers|this is a copy of the message"
    rb"|original message follows|original message headers)[^\r\n]*\r?$",
    re.I | re.M,
)
"""A line that announces the original in a bounce's text: qmail's `--- Below this line
is a copy of the message.`, Exim's, Postfix's, Exchange's."""
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")


def from_mail_system(data: bytes, message: Part) -> bool:
    """Whether the message says it is from a mail system: MAILER-DAEMON or postmaster,
    or Exim's X-Failed-Recipients. Such mail may say Auto-Submitted and still be a
    bounce."""
    if message.has("x-failed-recipients"):
        return True
    return _MAIL_SYSTEM.search((message.first(data, "from") or "")[:SUBJECT_LIMIT]) is not None


def bounce_subject(data: bytes, message: Part) -> bool:
    """Whether the subject says bounce, or the return path is the null one."""
    if (message.first(data, "return-path") or "").replace(" ", "") == "<>":
        return True
    return _BOUNCE_SUBJECT.search(subject(data, message)) is not None


def plain_bounce(data: bytes, start: int, root: Part) -> DeliveryReport | None:
    """The recipients the detectors find in the message at `data[start:]`, each with
    the status its paragraph names (else 5.0.0 failed, 4.0.0 delayed); None when they
    find none."""
    shown = _cut_lines(data[start : start + DETECTOR_BYTES])
    try:
        message = BytesParser(policy=compat32).parsebytes(shown)
        _readable_sender(message, root.first(data, "from"))
        temporary, permanent = all_failures(message)
    except Exception as exc:  # flufl.bounce re-raises what any detector raised
        log.warning("a bounce detector failed: %r", exc, exc_info=True)
        return None
    found = [(a, "failed") for a in sorted(permanent)]
    found += [(a, "delayed") for a in sorted(temporary - permanent)]
    if not found:
        return None
    text = shown[section_at(shown).body_offset :].decode("utf-8", "replace")
    named: list[tuple[int, RecipientStatus]] = []
    for raw, action in found[:MAX_RECIPIENTS]:
        address = raw.decode("ascii", "replace")
        at, paragraph = _paragraph(text, address)
        recipient = RecipientStatus(
            address=address,
            original=None,
            action=action,
            status=find_status(paragraph) or STATUS_OF_ACTION[action],
            diagnostic=" ".join(paragraph.split())[:DIAGNOSTIC_LIMIT] or None,
            remote_mta=None,
        )
        named.append((at, recipient))
    recipients = tuple(r for _, r in sorted(named, key=lambda n: n[0]))
    return DeliveryReport(
        reporting_mta=None,
        arrival_date=None,
        recipients=recipients,
        original_headers=original_headers(data, list(root.walk())[1:])
        or _inline_original(data, start),
        standard=False,
        remote_mta_ip=next(
            (ip for r in recipients if (ip := server_ip_in(r.diagnostic, bare=True))), None
        ),
    )


def _readable_sender(message: Message, sender: str | None) -> None:
    """Gives the copy the detectors see a From they can read: flufl.bounce 6's Yale
    detector raises IndexError on a From that is missing or empty, its Sina and Yahoo
    detectors call `.lower()` on a From with bytes that are not ASCII (which the
    standard library gives as a `Header`), and what one detector raises stops them all."""
    readable = (sender or "").encode("ascii", "replace").decode("ascii")
    del message["from"]
    message["From"] = readable if getaddresses([readable]) else "<>"


def _cut_lines(data: bytes) -> bytes:
    return b"".join(
        line if len(line) <= MAX_LINE + 2 else line[:MAX_LINE] + b"\r\n"
        for line in data.splitlines(keepends=True)
    )


def _paragraph(text: str, address: str) -> tuple[int, str]:
    """Where a bounce's text names `address`, and the paragraph from that line to the
    next blank line: where the MTA says what happened to it. A line that starts with
    the address goes before one that mentions it (`To: a@b`); (len(text), "") when the
    text does not name it."""
    lowered = text.lower()
    if len(lowered) != len(text):
        text = lowered  # a letter whose lowercase is longer: search and cut the same
    needle = address.lower()
    line = -1
    pos = lowered.find(needle)
    while pos >= 0:
        line_start = lowered.rfind("\n", 0, pos) + 1
        if line < 0 or not lowered[line_start:pos].strip(" \t<>*-"):
            line = line_start
            if not lowered[line_start:pos].strip(" \t<>*-"):
                break
        pos = lowered.find(needle, pos + len(needle))
    if line < 0:
        return len(text), ""
    blank = _BLANK_LINE.search(text, line, line + DIAGNOSTIC_LIMIT)
    return line, text[line : blank.start() if blank else line + DIAGNOSTIC_LIMIT]


def _inline_original(data: bytes, start: int) -> bytes | None:
    """The header section after the line in a bounce's text that announces it, in
    the part of the message the detectors saw."""
    marker = _ORIGINAL_MARKER.search(data, start, start + DETECTOR_BYTES)
    if marker is None:
        return None
    pos = marker.end()
    while data.startswith((b"\r\n", b"\n", b"\r"), pos):
        pos += 2 if data.startswith(b"\r\n", pos) else 1
    return header_bytes(data, pos)
