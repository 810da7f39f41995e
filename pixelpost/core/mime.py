"""The MIME structure of a message as byte ranges, and the transfer encodings.

`parse` finds each entity's header and body in the original bytes, following multipart
boundaries, so that one part can be replaced while every other byte stays where it was.
It never descends into attached messages (`message/*`) or into signed or encrypted
content (`multipart/signed`, `multipart/encrypted`, `application/pkcs7-mime`): those are
leaves that must not change. Malformed structure (a missing boundary, a part that never
ends) is read the lenient way mail clients read it.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import NamedTuple

from pixelpost.core.headers import HeaderSection, parse_header_section

MAX_DEPTH = 32
MAX_PARTS = 500
"""Entities read in one message (each costs its header's reading, and a part can be a
few bytes); parts past them are left as they are, untracked."""
"""Deeper nesting than this is treated as an opaque leaf."""

SEALED = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
    }
)
"""Content that a signature or encryption covers: never modified, never entered."""

_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary", ""})
MAX_LINE = 998
"""RFC 5322's limit on a line, without its CRLF."""
_LONG_LINE = MAX_LINE + 2
"""Octets before a LF that make a line too long (the line, its CR, one more)."""
_CACHED_VALUE = 200
"""Longest Content-Type value kept in the cache (a header can be as long as a message)."""
MAX_CONTENT_TYPE = 1024
"""Characters of a Content-Type value read; the rest is left out. The standard library's
parameter parser is quadratic in the value's length (a 200 KB value of empty parameters
took 1.5 s, 1 KB 2.6 ms), and a real value is a few hundred characters."""


class TransferEncodingError(ValueError):
    """A body cannot be decoded with its Content-Transfer-Encoding."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Entity:
    """One MIME entity: `data[start:body_start]` is its header (with the blank line),
    `data[body_start:end]` its body."""

    start: int
    body_start: int
    end: int
    header: HeaderSection
    content_type: str
    """Lowercased `type/subtype`; `text/plain` when absent or unreadable."""
    charset: str | None
    transfer_encoding: str
    """Lowercased; empty when the header is absent."""
    attachment: bool
    children: tuple[Entity, ...] = ()
    flowed: bool = False
    """`format=flowed` (RFC 3676): a line that ends in a space goes on on the next."""
    delsp: bool = False
    """`delsp=yes` too: that space is not part of the text (a word may go on)."""

    def walk(self) -> list[Entity]:
        """This entity and everything below it, in order."""
        found = [self]
        for child in self.children:
            found += child.walk()
        return found


def _header_value(data: bytes, header: HeaderSection, name: str) -> str | None:
    field = next(header.find(name), None)
    return None if field is None else field.value(data)


class _ContentType(NamedTuple):
    type: str
    charset: str | None
    boundary: str | None
    flowed: bool
    delsp: bool


def _content_type(value: str | None) -> _ContentType:
    """Type, charset, boundary and RFC 3676's `format` and `delsp` of a Content-Type
    value, read with the standard library's lenient parameter parser (RFC 2231
    included); short values, which come with message after message, from a cache."""
    if value is not None and len(value) > _CACHED_VALUE:
        return _parse_content_type(value[:MAX_CONTENT_TYPE])
    return _cached_content_type(value)


def _parse_content_type(value: str | None) -> _ContentType:
    if value is None:
        return _ContentType("text/plain", None, None, flowed=False, delsp=False)
    message = Message()
    message["Content-Type"] = value
    content_type = message.get_content_type()
    if "/" not in value.split(";", 1)[0]:
        content_type = "text/plain"  # an unreadable type means text/plain (RFC 2045 §5.2)
    # Only text/plain is flowed; the standard library reads the parameters anew for
    # each one asked for (quadratic in the value's length), so only then.
    flowed = (
        content_type == "text/plain"
        and "flowed" in value.lower()
        and _parameter(message, "format") == "flowed"
    )
    return _ContentType(
        content_type,
        message.get_content_charset(),
        message.get_boundary(),
        flowed=flowed,
        delsp=flowed and _parameter(message, "delsp") == "yes",
    )


def _parameter(message: Message, name: str) -> str:
    value = message.get_param(name)
    return value.strip().lower() if isinstance(value, str) else ""


_cached_content_type = functools.lru_cache(maxsize=1024)(_parse_content_type)


def part_ranges(data: bytes, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int]]:
    """The parts between the delimiter lines of `boundary` in `data[start:end]`, as
    (start, end), found as they are asked for: a part that is never closed runs to the
    end, and a reader that stops after some parts pays nothing for the rest. A part
    ends before the line break of the delimiter after it, which belongs to the
    delimiter (RFC 2046)."""
    delimiter = b"--" + boundary
    opened: int | None = None
    pos = start
    while (at := data.find(delimiter, pos, end)) >= 0:
        pos = at + len(delimiter)
        if at != start and data[at - 1 : at] != b"\n":
            continue
        line_end = data.find(b"\n", pos, end)
        line_end = end if line_end < 0 else line_end + 1
        rest = data[pos:line_end]
        closing = rest.startswith(b"--")
        if (rest[2:] if closing else rest).strip():
            continue  # a longer boundary that starts with this one
        if opened is not None:
            yield opened, _line_start_before(data, opened, at)
        if closing:
            return
        opened = pos = line_end
    if opened is not None:
        yield opened, end


def _line_start_before(data: bytes, start: int, at: int) -> int:
    """Where the line break before the delimiter at `at` begins."""
    if at > start and data[at - 1 : at] == b"\n":
        at -= 1
        if at > start and data[at - 1 : at] == b"\r":
            at -= 1
    return at


def parse(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> Entity:
    """The entity in `data[start:end]` and, for multiparts, its parts (`MAX_PARTS` in
    all at most)."""
    return _parse(data, start, len(data) if end is None else end, depth, [MAX_PARTS])


def _parse(data: bytes, start: int, end: int, depth: int, left: list[int]) -> Entity:
    left[0] -= 1
    header = parse_header_section(data, start, end)
    content_type, charset, boundary, flowed, delsp = _content_type(
        _header_value(data, header, "content-type")
    )
    disposition = (_header_value(data, header, "content-disposition") or "").lower()
    children: list[Entity] = []
    if (
        content_type.startswith("multipart/")
        and content_type not in SEALED
        and boundary
        and depth < MAX_DEPTH
    ):
        ranges = part_ranges(data, header.body_offset, end, boundary.encode("utf-8", "replace"))
        for part_start, part_end in ranges:
            if left[0] <= 0:
                break
            children.append(_parse(data, part_start, part_end, depth + 1, left))
    return Entity(
        start=start,
        body_start=header.body_offset,
        end=end,
        header=header,
        content_type=content_type,
        charset=charset,
        transfer_encoding=(_header_value(data, header, "content-transfer-encoding") or "")
        .strip()
        .lower(),
        attachment=disposition.split(";", 1)[0].strip() == "attachment",
        children=tuple(children),
        flowed=flowed,
        delsp=delsp,
    )


def html_parts(root: Entity) -> list[Entity]:
    """The HTML bodies tracking may rewrite: `text/html` that is not an attachment, and
    not inside an attached message or signed or encrypted content (which `parse` never
    enters)."""
    return _bodies(root, "text/html")


def text_parts(root: Entity) -> list[Entity]:
    """The plain-text bodies tracking may rewrite, by the rules of `html_parts`."""
    return _bodies(root, "text/plain")


def _bodies(root: Entity, content_type: str) -> list[Entity]:
    return [
        entity
        for entity in root.walk()
        if entity.content_type == content_type
        and not entity.attachment
        and entity.header.blank_line  # without one, there is no body to add to
    ]


def decode_body(body: bytes, transfer_encoding: str) -> bytes:
    """The octets a body stands for."""
    if transfer_encoding in _IDENTITY_ENCODINGS:
        return body
    if transfer_encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if transfer_encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error as exc:
            raise TransferEncodingError(f"bad base64: {exc}") from None
    raise TransferEncodingError(f"unsupported Content-Transfer-Encoding {transfer_encoding!r}")


def has_long_line(octets: bytes) -> bool:
    """Whether a line of `octets` passes RFC 5322's 998 octets.

    A line at a time, each a bounded `find`: linear, and it lets go of the interpreter
    between lines (a regex such as `[^\n]{1000,}` tries every position of a long
    body and holds the interpreter the whole time: 1.6 s for 6 MB of short lines)."""
    pos, size = 0, len(octets)
    while size - pos >= _LONG_LINE:
        end = octets.find(b"\n", pos, pos + _LONG_LINE)
        if end < 0:
            return True
        pos = end + 1
    return False


def quoted_printable(octets: bytes, eol: bytes) -> bytes:
    """`octets` quoted-printable, keeping their line breaks (`eol`) as hard breaks."""
    breaks = octets.count(b"\n")
    uniform = (
        breaks == octets.count(b"\r\n") == octets.count(b"\r")
        if eol == b"\r\n"
        else b"\r" not in octets
    )
    if uniform:  # every line break is `eol`: one call does it all
        encoded = binascii.b2a_qp(octets, quotetabs=False, istext=True)
        if not breaks and eol == b"\r\n":  # b2a_qp takes its soft breaks from the first line
            return encoded.replace(b"=\n", b"=\r\n")
        return encoded
    # Line by line, so that a line break stays a hard break and a stray CR or LF inside
    # a line is written =0D or =0A; b2a_qp inserts the soft breaks at 76 characters.
    return eol.join(
        binascii.b2a_qp(line, quotetabs=False, istext=False).replace(b"=\n", b"=" + eol)
        for line in octets.split(eol)
    )


def encode_body(octets: bytes, transfer_encoding: str, *, like: bytes) -> tuple[bytes, str]:
    """Encode `octets` as a body that was written `like` (keeping its kind of line break,
    and whether it ended with one). Returns the body and its transfer encoding, which
    turns from 7bit or 8bit into quoted-printable when a line would pass 998 octets."""
    crlf = b"\r\n" in like or b"\n" not in like
    eol = b"\r\n" if crlf else b"\n"
    if transfer_encoding in _IDENTITY_ENCODINGS:
        if transfer_encoding == "binary" or not has_long_line(octets):
            return octets, transfer_encoding
        transfer_encoding = "quoted-printable"
    if transfer_encoding == "quoted-printable":
        body = quoted_printable(octets, eol)
    else:
        body = base64.encodebytes(octets).replace(b"\n", eol)
        if body.endswith(eol) and not like.endswith(b"\n"):
            body = body.removesuffix(eol)
    return body, transfer_encoding
