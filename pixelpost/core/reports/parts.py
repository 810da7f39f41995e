"""The MIME structure of mail that comes back, as byte ranges, and its header fields.

Bounded so that the work stays linear in the message: multiparts are read down to
`MAX_DEPTH`, at most `MAX_PARTS` of them, and a returned message is never entered
beyond its header section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message
from email.utils import collapse_rfc2231_value

from pixelpost.core.headers import HeaderField, HeaderSection, message_start
from pixelpost.core.headers import parse_header_section as section_at
from pixelpost.core.mime import TransferEncodingError, decode_body, part_ranges

MAX_DEPTH = 8
"""Multiparts nested deeper than this are leaves: a report is two or three levels down."""
MAX_PARTS = 256
"""Parts read in one message; the rest are not looked at."""
CONTENT_TYPE_LIMIT = 1024
"""Characters of a Content-Type value read: the standard library's parameter parser
takes time quadratic in the length of what it is given."""
HEADER_LIMIT = 1024 * 1024
"""Octets of a part's header section read; what follows is its body."""
ORIGINAL_HEADERS_LIMIT = 256 * 1024
"""A returned header section is kept up to its last field within this many octets."""
SUBJECT_LIMIT = 1000
"""Characters of a Subject or From read: their start is all that counts."""
ORIGINAL_TYPES = (
    "message/rfc822",
    "text/rfc822-headers",
    "message/global",
    "message/global-headers",
)
"""The parts that return the original message, or its header section."""

_IDENTITY = ("", "7bit", "8bit", "binary")
_GUESSED_BOUNDARY = re.compile(
    rb"^--([0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,69})\r?$", re.M
)
_GUESS_WITHIN = 8192
_PREAMBLE_WITHIN = 4096
_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]*")


@dataclass(frozen=True, kw_only=True, slots=True)
class Part:
    """One entity: `header` locates its fields in the message, its body runs from
    `header.body_offset` to `end`."""

    header: HeaderSection
    end: int
    named: Mapping[str, HeaderField]
    """The first field of each (lowercase) name."""
    content_type: str
    """Lowercased `type/subtype`; `text/plain` when absent or unreadable."""
    report_type: str | None
    """A multipart/report's report-type parameter, lowercased."""
    transfer_encoding: str
    children: tuple[Part, ...] = ()

    def first(self, data: bytes, name: str) -> str | None:
        """The value of the first field `name` (lowercase), or None."""
        field = self.named.get(name)
        return None if field is None else value(data, field)

    def has(self, name: str) -> bool:
        return name in self.named

    def walk(self) -> Iterator[Part]:
        """This part and every part below it, in order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def body(self, data: bytes) -> bytes:
        """The octets the body stands for; as it is when its encoding is broken."""
        raw = data[self.header.body_offset : self.end]
        try:
            return decode_body(raw, self.transfer_encoding)
        except TransferEncodingError:
            return raw


def read_parts(data: bytes, start: int = 0) -> Part:
    """The entity at `data[start:]` and the parts below it."""
    return _Walk(data).part(start, len(data), depth=0)


class _Walk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.left = MAX_PARTS

    def part(self, start: int, end: int, depth: int) -> Part:
        data = self.data
        header = section_at(data, start, min(end, start + HEADER_LIMIT))
        named: dict[str, HeaderField] = {}
        for field in header.fields:
            named.setdefault(field.name.lower(), field)
        content_type = named.get("content-type")
        kind, report_type, boundary = _content_type(
            None if content_type is None else value(data, content_type)
        )
        children: list[Part] = []
        if kind.startswith("multipart/") and depth < MAX_DEPTH:
            boundary = boundary or _guess_boundary(data, header.body_offset, end)
            ranges = (
                part_ranges(data, header.body_offset, end, boundary.encode("utf-8", "replace"))
                if boundary
                else ()
            )
            for part_start, part_end in ranges:
                if self.left <= 0:
                    break
                self.left -= 1
                children.append(self.part(part_start, part_end, depth + 1))
        encoding = named.get("content-transfer-encoding")
        return Part(
            header=header,
            end=end,
            named=named,
            content_type=kind,
            report_type=report_type,
            transfer_encoding="" if encoding is None else value(data, encoding).lower(),
            children=tuple(children),
        )


def _content_type(value: str | None) -> tuple[str, str | None, str | None]:
    """Type, report-type and boundary of a Content-Type value, read with the standard
    library's lenient parameter parser (RFC 2231 included)."""
    if value is None or "/" not in value.split(";", 1)[0]:
        return "text/plain", None, None  # RFC 2045 §5.2
    message = Message()
    message["Content-Type"] = value[:CONTENT_TYPE_LIMIT]
    report_type = message.get_param("report-type")
    return (
        message.get_content_type(),
        collapse_rfc2231_value(report_type).strip().lower() if report_type else None,
        message.get_boundary(),
    )


def _guess_boundary(data: bytes, start: int, end: int) -> str | None:
    """A multipart's boundary when its Content-Type lost it: the first line that looks
    like a delimiter, as lenient readers take it."""
    found = _GUESSED_BOUNDARY.search(data, start, min(end, start + _GUESS_WITHIN))
    return None if found is None else found[1].rstrip().decode("ascii")


def value(data: bytes, field: HeaderField) -> str:
    """A field's value, unfolded and stripped, bytes that are not UTF-8 as U+FFFD."""
    raw = data[field.start : field.end]
    text = raw.split(b":", 1)[1] if b":" in raw else b""
    return _FOLD.sub(b" ", text).decode("utf-8", "replace").strip()


def subject(data: bytes, part: Part) -> str:
    """The start of the subject, its encoded words (RFC 2047) decoded."""
    text = (part.first(data, "subject") or "")[:SUBJECT_LIMIT]
    if "=?" not in text:
        return text
    decoded = []
    for chunk, charset in decode_header(text):
        if isinstance(chunk, str):
            decoded.append(chunk)
            continue
        try:
            # decode_header gives the text between encoded words in this codec.
            decoded.append(chunk.decode(charset or "raw-unicode-escape", "replace"))
        except LookupError:
            decoded.append(chunk.decode("utf-8", "replace"))
    return "".join(decoded)


FIELDS_LIMIT = 256 * 1024
"""Bytes of a delivery-status or feedback-report part read (a thousand recipients'
fields fit): its fields are read line by line, and a hostile part of megabytes of
lines that are no field would cost seconds."""


def groups(body: bytes) -> Iterator[dict[str, list[str]]]:
    """The groups of fields of a delivery-status or feedback-report body (its first
    `FIELDS_LIMIT` bytes), separated by blank lines, by lowercase name; a line that is
    no field is skipped."""
    body = body[:FIELDS_LIMIT]
    pos = 0
    while pos < len(body):
        section = section_at(body, pos)
        if section.fields:
            group: dict[str, list[str]] = {}
            for field in section.fields:
                group.setdefault(field.name.lower(), []).append(value(body, field))
            yield group
        if section.body_offset > pos:
            pos = section.body_offset
        else:
            line_end = body.find(b"\n", pos)
            pos = len(body) if line_end < 0 else line_end + 1


def header_bytes(data: bytes, start: int = 0, end: int | None = None) -> bytes | None:
    """The header section at `data[start:end]`, without its blank line, up to its last
    field within `ORIGINAL_HEADERS_LIMIT`; None when it has no field."""
    end = len(data) if end is None else end
    limit = min(end, start + ORIGINAL_HEADERS_LIMIT)
    section = section_at(data, start, limit)
    fields = section.fields
    if limit < end and not section.blank_line and section.body_offset >= limit:
        fields = fields[:-1]  # the field the limit cut
    return data[start : fields[-1].end] if fields else None


def original_headers(data: bytes, parts: Iterator[Part] | list[Part]) -> bytes | None:
    """The header section of the first returned message (or header section) among
    `parts`. One with a transfer encoding, which message/* must not have but at times
    has, is decoded first."""
    part = next((p for p in parts if p.content_type in ORIGINAL_TYPES), None)
    if part is None:
        return None
    if part.transfer_encoding not in _IDENTITY:
        body = part.body(data)
        return header_bytes(body, message_start(body))
    start = part.header.body_offset
    preamble = message_start(data[start : min(part.end, start + _PREAMBLE_WITHIN)])
    return header_bytes(data, start + preamble, part.end)


def header_section(message: bytes) -> bytes:
    """The header section of `message`, without the blank line after it (nor an mbox
    `From ` line before it), up to its last field within `ORIGINAL_HEADERS_LIMIT`."""
    return header_bytes(message, message_start(message)) or b""


def returned_header(headers: bytes | None, name: str) -> list[str]:
    """The values of the fields `name` (any case) in a returned header section, such as
    `DeliveryReport.original_headers`: unfolded, bytes that are not UTF-8 as U+FFFD;
    empty when there are none (or no headers)."""
    if not headers:
        return []
    section = section_at(headers, message_start(headers))
    return [value(headers, f) for f in section.find(name.lower())]
