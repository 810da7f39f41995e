"""Tracking rewrite of a whole message: find its HTML parts, decode them, plan the edits
once, and render a copy per recipient by splicing re-encoded parts into the original
bytes.

Every header and every part other than the rewritten HTML bodies stays byte-identical,
and inside a rewritten 7bit, 8bit or quoted-printable body so does every line that
tracking does not touch: only the lines holding a link, a removed `ses:*` attribute or
the pixel are encoded anew. A part's charset and transfer encoding are kept (a 7bit or
8bit part whose lines would pass 998 octets becomes quoted-printable, and its header
says so). Anything that cannot be decoded raises `RewriteFailure`, and the relay then
delivers the original.

Most charsets keep ASCII bytes for ASCII characters and never use bytes below 0x40
inside multi-byte characters, so HTML markup can be read on the bytes themselves: such
parts are held as latin-1 text (one character per byte, lossless and cheap) and only
link values are decoded with the real charset. Other charsets (UTF-16, ISO-2022-JP,
UTF-7, EBCDIC pages) are decoded and encoded whole.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pixelpost.core import html, mime
from pixelpost.core.headers import HeaderSection
from pixelpost.errors import PixelpostError

_ASCII_COMPATIBLE = frozenset(
    {
        "ascii", "utf-8", "cp874", "tis-620", "koi8-r", "koi8-u", "koi8-t",
        "shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "euc_jp",
        "euc_jis_2004", "euc_jisx0213", "euc_kr", "cp949", "gb2312", "gbk", "gb18030",
        "big5", "big5hkscs", "cp950",
    }
)  # fmt: skip
# Names mail uses that Python's codec registry does not know.
_CHARSET_ALIASES = {"windows-874": "cp874", "x-sjis": "shift_jis", "unicode-1-1-utf-7": "utf-7"}
# A line break that is not a quoted-printable soft break ("=" at the end of the line).
# The literal comes first so that the search runs at C speed.
_HARD_BREAK = re.compile(rb"\n(?<!=\n)(?<!=\r\n)")
_LINE_BREAKS = ("7bit", "8bit", "", "quoted-printable")
"""Transfer encodings whose lines can be kept one by one."""

Renderer = Callable[[html.Plan], str]


class RewriteFailure(PixelpostError):
    """The message cannot be rewritten for tracking; it goes out untouched."""


def _ascii_compatible(codec: str) -> bool:
    return (
        codec in _ASCII_COMPATIBLE
        or codec.startswith(("iso8859-", "cp125", "mac-"))
        or (codec.startswith("cp") and codec[2:].isdigit() and 437 <= int(codec[2:]) <= 869)
    )


def _codec(charset: str | None) -> str:
    name = charset or "us-ascii"
    try:
        return codecs.lookup(_CHARSET_ALIASES.get(name, name)).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        raise RewriteFailure(f"unknown charset {name!r}") from None


def _url_decoder(codec: str) -> Callable[[str], str]:
    def decode(value: str) -> str:
        raw = value.encode("latin-1")
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            return raw.decode("utf-8")  # charsets are often mislabelled; UTF-8 is likeliest

    return decode


@dataclass(frozen=True, kw_only=True, slots=True)
class _Part:
    """One HTML body, planned. `segments` alternate the original encoded lines kept as
    they are (bytes) and the lines tracking changes (plans, encoded per recipient);
    it is None when the body is encoded whole (base64, or a charset that is not
    ASCII-compatible)."""

    entity: mime.Entity
    doc: str
    changes: tuple[html.Edit, ...]
    codec: str
    """The Python codec that turns rendered text into the part's octets."""
    segments: tuple[bytes | html.Plan, ...] | None
    eol: bytes


def _encode_lines(octets: bytes, encoding: str, eol: bytes) -> bytes | None:
    """Changed lines in the body's own transfer encoding; None when a 7bit or 8bit
    line would grow past 998 octets (the whole part then turns quoted-printable)."""
    if encoding == "quoted-printable":
        return mime.quoted_printable(octets, eol)
    if mime.has_long_line(octets):
        return None
    return octets


@dataclass(frozen=True, kw_only=True, slots=True)
class MessagePlan:
    """A message cut for tracking; `render` makes one recipient's copy."""

    data: bytes
    parts: tuple[_Part, ...]
    links: tuple[html.Link, ...]
    """Every tracked link of the message, indexed across its HTML parts."""

    @property
    def changes(self) -> bool:
        """Whether rendering changes anything (otherwise every copy is the original)."""
        return bool(self.parts)

    def render(
        self, *, open_url: str | None, click_url: Callable[[html.Link], str] | None
    ) -> bytes:
        def text(plan: html.Plan) -> str:
            return plan.render(open_url=open_url, click_url=click_url)

        out: list[bytes] = []
        pos = 0
        for part in self.parts:
            entity = part.entity
            out.append(self.data[pos : entity.start])
            body = self._by_lines(part, text) if part.segments is not None else None
            if body is None:
                body, encoding = mime.encode_body(
                    text(html.plan(part.doc, part.changes)).encode(part.codec),
                    entity.transfer_encoding,
                    like=self.data[entity.body_start : entity.end],
                )
                out.append(_header(self.data, entity, encoding))
            else:
                out.append(self.data[entity.start : entity.body_start])
            out.append(body)
            pos = entity.end
        out.append(self.data[pos:])
        return b"".join(out)

    @staticmethod
    def _by_lines(part: _Part, text: Renderer) -> bytes | None:
        assert part.segments is not None
        out: list[bytes] = []
        for segment in part.segments:
            if isinstance(segment, bytes):
                out.append(segment)
                continue
            encoded = _encode_lines(
                text(segment).encode("latin-1"), part.entity.transfer_encoding, part.eol
            )
            if encoded is None:
                return None
            out.append(encoded)
        return b"".join(out)


def _header(data: bytes, entity: mime.Entity, encoding: str) -> bytes:
    """The entity's header, with Content-Transfer-Encoding changed if `encoding` is new."""
    header = data[entity.start : entity.body_start]
    if encoding == entity.transfer_encoding:
        return header
    section: HeaderSection = entity.header
    line = f"Content-Transfer-Encoding: {encoding}\r\n".encode("ascii")
    field = next(section.find("content-transfer-encoding"), None)
    if field is not None:
        return data[entity.start : field.start] + line + data[field.end : entity.body_start]
    last = section.fields[-1].end if section.fields else entity.start
    return data[entity.start : last] + line + data[last : entity.body_start]


def _segments(
    doc: str, octets: bytes, raw: bytes, changes: Sequence[html.Edit], encoding: str
) -> tuple[bytes | html.Plan, ...] | None:
    """Split a body into the encoded lines to keep and plans for the lines to change;
    None when decoded and encoded lines do not correspond one to one.

    In a 7bit or 8bit body, `doc` holds the body's own octets, so a line is at the same
    place in both; in a quoted-printable one, the k-th line of `doc` is the k-th hard
    line of `raw` (`octets` is `raw` decoded, `doc` the same as text)."""
    encoded_starts: list[int] = []
    if encoding == "quoted-printable":
        encoded_starts = [0, *map(re.Match.end, _HARD_BREAK.finditer(raw)), len(raw)]
        if len(encoded_starts) != doc.count("\n") + 2:
            return None  # a line break written =0A, say: encode the body whole
    # The lines each change touches, merged into runs of whole lines (adjacent ones
    # too); a run keeps the range of its changes, so that each is planned from its own.
    runs: list[list[int]] = []  # [start, end, first change, end of changes]
    for number, edit in enumerate(changes):
        start = doc.rfind("\n", 0, edit.start) + 1
        end = doc.find("\n", max(edit.end - 1, edit.start)) + 1 or len(doc)
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
            runs[-1][3] = number + 1
        else:
            runs.append([start, end, number, number + 1])
    segments: list[bytes | html.Plan] = []
    pos = encoded = line = 0  # where the next line starts in `doc` and `raw`, its number
    unterminated = not doc.endswith("\n")
    for start, end, first_change, end_change in runs:
        if not encoded_starts:
            encoded_start, encoded_end = start, end
        else:
            first = line + doc.count("\n", pos, start)
            # The line after the run; after the last line, which has no break, the end.
            line = first + doc.count("\n", start, end) + (end == len(doc) and unterminated)
            encoded_start, encoded_end = encoded_starts[first], encoded_starts[line]
            if mime.decode_body(raw[encoded_start:encoded_end], encoding) != octets[start:end]:
                return None  # malformed quoted-printable that moves lines: encode it whole
        if encoded_start > encoded:
            segments.append(raw[encoded:encoded_start])
        segments.append(html.plan(doc, changes[first_change:end_change], start, end))
        pos, encoded = end, encoded_end
    if encoded < len(raw):
        segments.append(raw[encoded:])
    return tuple(segments)


def plan_message(data: bytes, *, links: bool, pixel: bool) -> MessagePlan:
    """Plan the tracking of `data`; RewriteFailure says why it cannot be done."""
    if not links and not pixel:
        return MessagePlan(data=data, parts=(), links=())
    root = mime.parse(data)
    parts: list[_Part] = []
    all_links: list[html.Link] = []
    for entity in mime.html_parts(root):
        raw = data[entity.body_start : entity.end]
        try:
            octets = mime.decode_body(raw, entity.transfer_encoding)
        except mime.TransferEncodingError as exc:
            raise RewriteFailure(str(exc)) from None
        codec = _codec(entity.charset)
        ascii_compatible = _ascii_compatible(codec)
        if ascii_compatible:
            doc = octets.decode("latin-1")
            found = html.scan(doc, decode=_url_decoder(codec), first_index=len(all_links))
            text_codec = "latin-1"
        else:
            try:
                doc = octets.decode(codec)
            except UnicodeDecodeError as exc:
                raise RewriteFailure(f"HTML part is not valid {entity.charset}: {exc}") from None
            found = html.scan(doc, first_index=len(all_links))
            text_codec = codec
        all_links += found.links
        changes = html.edits(found, links=links, pixel=pixel)
        keeps_lines = ascii_compatible and entity.transfer_encoding in _LINE_BREAKS
        parts.append(
            _Part(
                entity=entity,
                doc=doc,
                changes=tuple(changes),
                codec=text_codec,
                segments=(
                    _segments(doc, octets, raw, changes, entity.transfer_encoding)
                    if keeps_lines
                    else None
                ),
                eol=b"\r\n" if b"\r\n" in raw or b"\n" not in raw else b"\n",
            )
        )
    return MessagePlan(data=data, parts=tuple(parts), links=tuple(all_links) if links else ())
