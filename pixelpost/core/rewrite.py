"""Tracking rewrite of a whole message: find its HTML and text parts, decode them, plan
the edits once, and render a copy per recipient by splicing re-encoded parts into the
original bytes.

Every header and every part other than the rewritten bodies stays byte-identical, and
inside a rewritten 7bit, 8bit or quoted-printable body so does every line that tracking
does not touch: only the lines holding a link, a removed `ses:*` attribute, the pixel
or an unsubscribe placeholder are encoded anew. A part's charset and transfer encoding
are kept (a 7bit or 8bit part whose lines would pass 998 octets becomes
quoted-printable, and its header says so). Anything that cannot be decoded raises
`RewriteFailure`, and the relay then delivers the original.

Most charsets keep ASCII bytes for ASCII characters and never use bytes below 0x40
inside multi-byte characters, so HTML markup and URLs can be read on the bytes
themselves: such parts are held as latin-1 text (one character per byte, lossless and
cheap) and only links are decoded with the real charset. Other charsets (UTF-16,
ISO-2022-JP, UTF-7, EBCDIC pages) are decoded and encoded whole.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pixelpost.core import html, mime, splice, text
from pixelpost.core.headers import HeaderSection
from pixelpost.core.splice import Edit, Link, Plan
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

Renderer = Callable[[Plan], str]
MAX_TRACKED_LINKS = 250
"""Links tracked in a message's text parts, counted on from its HTML links (SES tracks
at most 250 links a message). HTML links are not held to it."""


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
    """One HTML or plain-text body, planned. `segments` alternate the original encoded
    lines kept as they are (bytes) and the lines tracking changes (plans, encoded per
    recipient); it is None when the body is encoded whole (base64, or a charset that is
    not ASCII-compatible)."""

    entity: mime.Entity
    doc: str
    changes: tuple[Edit, ...]
    plain: bool
    """A text/plain body: its slots are written as they are, not HTML-escaped."""
    codec: str
    """The Python codec that turns rendered text into the part's octets."""
    segments: tuple[bytes | Plan, ...] | None
    eol: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class _Body:
    """A body decoded for scanning."""

    raw: bytes
    octets: bytes
    doc: str
    codec: str
    """What `doc` is encoded with to give `octets`: "latin-1" for a stand-in."""
    charset: str | None
    """The body's own codec when `doc` is a latin-1 stand-in for its bytes, else None."""


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
    """The bodies tracking changes, in the message's order."""
    links: tuple[Link, ...]
    """Every tracked link of the message: its HTML parts' first, then its text parts',
    numbered across them all."""

    @property
    def changes(self) -> bool:
        """Whether rendering changes anything (otherwise every copy is the original)."""
        return bool(self.parts)

    def render(
        self,
        *,
        open_url: str | None,
        click_url: Callable[[Link], str] | None,
        unsubscribe_url: str | None = None,
    ) -> bytes:
        """One recipient's copy. The URLs are ASCII, as tracking URLs are (they are
        written into each part in its own charset). With `click_url` None links stay as
        written, with `open_url` None there is no pixel, with `unsubscribe_url` None
        `{{amazonSESUnsubscribeUrl}}` stays as written."""

        def fill(plan: Plan) -> str:
            return plan.render(
                open_url=open_url, click_url=click_url, unsubscribe_url=unsubscribe_url
            )

        out: list[bytes] = []
        pos = 0
        for part in self.parts:
            entity = part.entity
            out.append(self.data[pos : entity.start])
            body = self._by_lines(part, fill) if part.segments is not None else None
            if body is None:
                whole = splice.plan(part.doc, part.changes, plain=part.plain)
                body, encoding = mime.encode_body(
                    fill(whole).encode(part.codec),
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
    def _by_lines(part: _Part, fill: Renderer) -> bytes | None:
        assert part.segments is not None
        out: list[bytes] = []
        for segment in part.segments:
            if isinstance(segment, bytes):
                out.append(segment)
                continue
            encoded = _encode_lines(
                fill(segment).encode("latin-1"), part.entity.transfer_encoding, part.eol
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


def _runs(doc: str, changes: Sequence[Edit]) -> list[list[int]]:
    """The lines each change touches, merged into runs of whole lines (adjacent ones
    too): [start, end, first change, end of changes], so that each run is planned from
    its own changes. The searches for line breaks start where the last run ends, so that
    many changes on one long line cost its length once, not once each."""
    runs: list[list[int]] = []
    for number, edit in enumerate(changes):
        last = max(edit.end - 1, edit.start)  # its last character, or where it goes
        if runs and edit.start < runs[-1][1]:  # on a line of the run already
            if last >= runs[-1][1]:
                runs[-1][1] = doc.find("\n", last) + 1 or len(doc)
            runs[-1][3] = number + 1
            continue
        searched = runs[-1][1] if runs else 0
        start = doc.rfind("\n", searched, edit.start) + 1 or searched
        end = doc.find("\n", last) + 1 or len(doc)
        if runs and start <= runs[-1][1]:
            runs[-1][1] = end
            runs[-1][3] = number + 1
        else:
            runs.append([start, end, number, number + 1])
    return runs


def _segments(
    doc: str, octets: bytes, raw: bytes, changes: Sequence[Edit], encoding: str, *, plain: bool
) -> tuple[bytes | Plan, ...] | None:
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
    segments: list[bytes | Plan] = []
    pos = encoded = line = 0  # where the next line starts in `doc` and `raw`, its number
    unterminated = not doc.endswith("\n")
    for start, end, first_change, end_change in _runs(doc, changes):
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
        segments.append(
            splice.plan(doc, changes[first_change:end_change], start, end, plain=plain)
        )
        pos, encoded = end, encoded_end
    if encoded < len(raw):
        segments.append(raw[encoded:])
    return tuple(segments)


def plan_message(
    data: bytes,
    *,
    links: bool,
    pixel: bool,
    text_links: bool = False,
    unsubscribe: bool = False,
) -> MessagePlan:
    """Plan the tracking of `data`; RewriteFailure says why it cannot be done.

    `links` tracks the links of the HTML parts, `pixel` adds the open pixel to them,
    `text_links` tracks the http(s) URLs of the text/plain parts (`text`), at most
    `MAX_TRACKED_LINKS` with the HTML links before them, and `unsubscribe` makes every
    `{{amazonSESUnsubscribeUrl}}` of both a slot for the recipient's unsubscribe URL
    (an HTML link to it is never click-tracked). A body is decoded only when it is to
    be scanned, and one that nothing changes is not part of the plan. A text part that
    cannot be decoded is left as it came, untracked; an HTML part that cannot fails the
    plan."""
    if not (links or pixel or text_links or unsubscribe):
        return MessagePlan(data=data, parts=(), links=())
    root = mime.parse(data)
    parts: list[_Part] = []
    html_links: list[Link] = []
    if links or pixel or unsubscribe:
        for entity in mime.html_parts(root):
            body = _decoded(data, entity, "HTML")
            decode = None if body.charset is None else _url_decoder(body.charset)
            found = html.scan(
                body.doc, decode=decode, first_index=len(html_links), unsubscribe=unsubscribe
            )
            html_links += found.links
            changes = html.edits(found, links=links, pixel=pixel, unsubscribe=unsubscribe)
            if changes:
                parts.append(_planned(entity, body, changes, plain=False))
    tracked = html_links if links else []
    if text_links or unsubscribe:
        for entity in mime.text_parts(root):
            try:
                body = _decoded(data, entity, "text")
            except RewriteFailure:
                continue  # left as it came: the HTML's tracking need not pay for it
            found_text = text.scan(
                body.doc,
                links=text_links,
                unsubscribe=unsubscribe,
                codec=body.charset,
                first_index=len(tracked),
                limit=max(0, MAX_TRACKED_LINKS - len(tracked)),
                flowed=entity.flowed,
                delsp=entity.delsp,
            )
            tracked = [*tracked, *found_text.links]
            if changes := text.edits(found_text):
                parts.append(_planned(entity, body, changes, plain=True))
    parts.sort(key=lambda part: part.entity.start)
    return MessagePlan(data=data, parts=tuple(parts), links=tuple(tracked))


def _decoded(data: bytes, entity: mime.Entity, kind: str) -> _Body:
    """The body of `entity` as text to scan: for an ASCII-compatible charset, a latin-1
    stand-in for its octets."""
    raw = data[entity.body_start : entity.end]
    try:
        octets = mime.decode_body(raw, entity.transfer_encoding)
    except mime.TransferEncodingError as exc:
        raise RewriteFailure(str(exc)) from None
    codec = _codec(entity.charset)
    if _ascii_compatible(codec):
        return _Body(
            raw=raw, octets=octets, doc=octets.decode("latin-1"), codec="latin-1", charset=codec
        )
    try:
        doc = octets.decode(codec)
    except UnicodeDecodeError as exc:
        raise RewriteFailure(f"{kind} part is not valid {entity.charset}: {exc}") from None
    return _Body(raw=raw, octets=octets, doc=doc, codec=codec, charset=None)


def _planned(entity: mime.Entity, body: _Body, changes: list[Edit], *, plain: bool) -> _Part:
    encoding = entity.transfer_encoding
    keeps_lines = body.charset is not None and encoding in _LINE_BREAKS
    return _Part(
        entity=entity,
        doc=body.doc,
        changes=tuple(changes),
        plain=plain,
        codec=body.codec,
        segments=(
            _segments(body.doc, body.octets, body.raw, changes, encoding, plain=plain)
            if keeps_lines
            else None
        ),
        eol=b"\r\n" if b"\r\n" in body.raw or b"\n" not in body.raw else b"\n",
    )
