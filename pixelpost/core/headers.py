"""The message header section as byte ranges: find fields, read pixelpost's control
headers, splice them out and add a `Received:` field, without re-serializing anything.

Everything here is pure and works on the bytes the client sent, so that every field the
relay does not touch reaches the upstream exactly as it arrived.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from pixelpost.core.overrides import OVERRIDE_HEADERS

CONFIG_SET_HEADERS = ("x-config-set", "x-ses-configuration-set")
TAG_HEADERS = ("x-message-tags", "x-ses-message-tags")
CONTROL_HEADERS = frozenset(CONFIG_SET_HEADERS + TAG_HEADERS) | OVERRIDE_HEADERS
"""Removed before a message goes on: its configuration set, tags and per-message
tracking controls (`pixelpost.core.overrides`)."""

# RFC 5322 field names are printable ASCII but colon; obsolete syntax allows blanks
# before the colon, which some mailers still write.
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
_TAG_PART = re.compile(r"[A-Za-z0-9_-]{1,256}")
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.:\[\]_-]")
_MAX_HELO_SHOWN = 255


@dataclass(frozen=True, kw_only=True, slots=True)
class HeaderField:
    """One header field: `data[start:end]` is the field with its folded lines and line
    break; `name` is as written."""

    name: str
    start: int
    end: int

    def value(self, data: bytes) -> str:
        """The unfolded value, decoded as UTF-8 (RFC 6532) with bad bytes replaced."""
        raw = data[self.start : self.end]
        value = raw.split(b":", 1)[1] if b":" in raw else b""
        unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", value)
        return unfolded.decode("utf-8", "replace").strip()


@dataclass(frozen=True, kw_only=True, slots=True)
class HeaderSection:
    """The fields of a message and where its body starts."""

    fields: tuple[HeaderField, ...]
    body_offset: int
    """Offset of the body: after the blank line, or where the first non-field line is."""
    blank_line: bool = False
    """Whether a blank line ended the header section, as it should."""

    def find(self, *names: str) -> Iterator[HeaderField]:
        """The fields with any of the lowercase `names`, in order."""
        return (f for f in self.fields if f.name.lower() in names)


def _next_line(data: bytes, start: int, end: int) -> int:
    found = data.find(b"\n", start, end)
    return end if found < 0 else found + 1


def message_start(data: bytes) -> int:
    """Where the message proper starts in `data`: after an mbox "From " line and empty
    lines, which archives put before a header section, when a header field follows
    them; otherwise 0 (a message that is all body stays one)."""
    pos = _next_line(data, 0, len(data)) if data.startswith(b"From ") else 0
    while data.startswith((b"\r\n", b"\n"), pos):
        pos = _next_line(data, pos, len(data))
    if pos == 0:
        return 0
    field = _FIELD.match(data, pos)
    return pos if field is not None and field.end() <= _next_line(data, pos, len(data)) else 0


def parse_header_section(data: bytes, start: int = 0, end: int | None = None) -> HeaderSection:
    """Locate the header fields of the entity in `data[start:end]` (offsets stay those of
    `data`). Never fails: a line that is neither a field nor a continuation ends the
    header section, as a lenient reader would treat it."""
    size = len(data) if end is None else end
    fields: list[HeaderField] = []
    pos = start
    name: str | None = None
    field_start = start
    while pos < size:
        line_end = _next_line(data, pos, size)
        first = data[pos : pos + 1]
        if first in (b" ", b"\t") and name is not None:
            pos = line_end
            continue
        if name is not None:
            fields.append(HeaderField(name=name, start=field_start, end=pos))
            name = None
        if data.startswith((b"\r\n", b"\n"), pos, size):
            return HeaderSection(fields=tuple(fields), body_offset=line_end, blank_line=True)
        match = _FIELD.match(data, pos, size)
        if match is None or match.end() > line_end:
            return HeaderSection(fields=tuple(fields), body_offset=pos)
        name = match[1].decode("ascii")
        field_start = pos
        pos = line_end
    if name is not None:
        fields.append(HeaderField(name=name, start=field_start, end=size))
    return HeaderSection(fields=tuple(fields), body_offset=size)


def remove_fields(data: bytes, fields: Sequence[HeaderField]) -> bytes:
    """`data` without `fields` (in message order); every other byte stays."""
    if not fields:
        return data
    pieces = []
    pos = 0
    for field in fields:
        pieces.append(data[pos : field.start])
        pos = field.end
    pieces.append(data[pos:])
    return b"".join(pieces)


@dataclass(frozen=True, kw_only=True, slots=True)
class Controls:
    """What pixelpost's control headers asked for, and the message without them."""

    config_set: str | None
    """From the first X-Config-Set / X-SES-CONFIGURATION-SET; None when absent."""
    tags: dict[str, tuple[str, ...]]
    rejected_tags: tuple[tuple[str, str], ...]
    """Tag entries that were not `name=value` in SES's character set, each with the name
    of the header it was in, as written."""
    content: bytes
    """The message as it goes on: without the control headers, and without what came
    before its header section (`message_start`)."""
    original: bytes
    """The message as it came, but for what came before its header section."""
    dropped: bytes = b""
    """What came before the header section: an mbox "From " line, empty lines."""
    overrides: tuple[tuple[str, str], ...] = ()
    """The per-message tracking controls, each header's name as written and its value
    (`pixelpost.core.overrides.read_overrides` reads them)."""


def parse_tags(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """SES message tags, `name=value, name2=value2`: the tags and the rejected entries.

    Names and values may use letters, digits, `_` and `-`, as in SES; names starting with
    `ses:` are reserved for pixelpost's own tags and cannot be set by a mailer.
    """
    tags: dict[str, list[str]] = {}
    rejected: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if sep and _TAG_PART.fullmatch(name) and _TAG_PART.fullmatch(value):
            tags.setdefault(name, []).append(value)
        else:
            rejected.append(entry)
    return tags, rejected


def extract_controls(data: bytes) -> Controls:
    """Read and remove the control headers of a message, and what an archive put before
    its header section."""
    start = message_start(data)
    dropped, data = (data[:start], data[start:]) if start else (b"", data)
    section = parse_header_section(data)
    controls = [f for f in section.fields if f.name.lower() in CONTROL_HEADERS]
    if not controls:
        return Controls(
            config_set=None,
            tags={},
            rejected_tags=(),
            content=data,
            original=data,
            dropped=dropped,
        )
    config_set = next(
        (f.value(data) for f in controls if f.name.lower() in CONFIG_SET_HEADERS), None
    )
    tags: dict[str, list[str]] = {}
    rejected: list[tuple[str, str]] = []
    for field in controls:
        if field.name.lower() in TAG_HEADERS:
            found, bad = parse_tags(field.value(data))
            for name, values in found.items():
                tags.setdefault(name, []).extend(values)
            rejected.extend((field.name, entry) for entry in bad)
    return Controls(
        config_set=config_set,
        tags={name: tuple(values) for name, values in tags.items()},
        rejected_tags=tuple(rejected),
        content=remove_fields(data, controls),
        original=data,
        dropped=dropped,
        overrides=tuple(
            (f.name, f.value(data)) for f in controls if f.name.lower() in OVERRIDE_HEADERS
        ),
    )


def received_field(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    when: datetime,
) -> bytes:
    """A `Received:` field in Postfix's layout (RFC 5321 §4.4), folded, with CRLF.

    The recipient is named only for single-recipient mail, so that one copy does not
    reveal the others (the Bcc rule Postfix follows too).
    """
    shown_helo = _HELO_UNSAFE.sub("?", helo or "unknown")[:_MAX_HELO_SHOWN]
    lines = [
        f"Received: from {shown_helo} ([{client_ip}])",
        f"\tby {hostname} (pixelpost) with {protocol} id {queue_id}",
    ]
    stamp = format_datetime(when)
    if recipient is not None and "\r" not in recipient and "\n" not in recipient:
        lines.append(f"\tfor <{recipient}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The `with` keyword of RFC 3848 and RFC 6531 (ESMTPSA, UTF8SMTPS, …)."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")
