"""Finds what tracking changes in an HTML document, without re-serializing it.

`scan` reads the document once and returns its links (`<a href>`, `<area href>` and the
`href` of VML elements such as Outlook's `<v:roundrect>`), the `ses:no-track` and
`ses:tags` attributes to remove, and where the open pixel goes. `Plan.render` then
writes the document with only those spans replaced, so every other character (Outlook
conditional comments, entity spelling, quoting, whitespace) stays exactly as it was.

What is markup follows what recipients' clients see: ordinary comments, `<script>`,
`<style>`, `<title>`, `<textarea>` and CDATA are text, not markup; the inside of an
Outlook conditional comment (`<!--[if mso]> … <![endif]-->`) is markup, because Outlook
renders it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from html.entities import html5
from typing import NamedTuple

# A tag's attributes up to its ">": unquoted stretches, and quoted values whole (which
# may hold ">" or "<a ...>" as text); written unrolled, one step per quoted value.
_ATTRIBUTES = r"""[^>"']*+(?:(?:"[^"]*+"|'[^']*+')[^>"']*+)*+"""
_ATTRIBUTES_END = _ATTRIBUTES + ">"
_TAG_REST = r"""[^\s/>]*+""" + _ATTRIBUTES_END
# What follows a "<" that is skipped, in order; the "<" is matched once, so that each
# alternative is ruled out by its first character.
_SKIPPED = "|".join(
    [
        # the common tags first: names that cannot start anything special
        r"""[b-rB-RuUw-zW-Z]""" + _TAG_REST,
        r"""/[ac-zAC-Z]""" + _TAG_REST,
        # the other tags whose names start like a special one (td, strong, abbr, …)
        r"""[tT](?![iI][tT][lL][eE][\s/>]|[eE][xX][tT][aA][rR][eE][aA][\s/>])""" + _TAG_REST,
        r"""[sS](?![cC][rR][iI][pP][tT][\s/>]|[tT][yY][lL][eE][\s/>])""" + _TAG_REST,
        r"""[aA](?![\s/>]|[rR][eE][aA][\s/>])""" + _TAG_REST,
        r"""[vV](?!:)""" + _TAG_REST,
        r"""/[bB](?![oO][dD][yY][\s/>])""" + _TAG_REST,
        # Outlook's conditional comments: skip the markers, scan what they enclose
        r"""!--\[if[^\]]*+\]>(?:<!-->)?+""",
        r"""!\[if[^\]]*+\]>""",
        r"""!(?:--)?\[endif\](?:--)?>""",
        # comments, CDATA, declarations and processing instructions, whole
        r"""!--[^-]*+(?:-(?!->)[^-]*+)*+(?:-->)?+""",
        r"""!\[CDATA\[[^\]]*+(?:\](?!\]>)[^\]]*+)*+(?:\]\]>)?+""",
        r"""[!?][^>]*+>?+""",
        # raw text up to its end tag, which the next round reads as an ordinary end tag
        *(
            rf"""(?i:{name})(?=[\s/>]){_ATTRIBUTES_END}[^<]*+(?:<(?!/(?i:{name})[\s/>])[^<]*+)*+"""
            for name in ("script", "style", "title", "textarea")
        ),
        # a "<" that starts no tag is text
        r"""(?![a-zA-Z/])""",
        r"""/(?![a-zA-Z])""",
    ]
)
# Everything up to the next link or </body>, in one C-level match: text; tags other
# than a, area and VML elements, with their quoted attribute values (which may hold ">"
# or "<a ...>" as text); comments, CDATA, declarations and the content of raw-text
# elements, all skipped whole; and the markers of Outlook's conditional comments, whose
# content is markup and is scanned on. Possessive quantifiers keep an unterminated tag
# from backtracking exponentially.
_SKIP = re.compile(rf"(?:[^<]*+<(?:{_SKIPPED}))*+[^<]*+")
_START_TAG = re.compile(rf"<([a-zA-Z][^\s/>]*+)({_ATTRIBUTES})>")
_END_BODY = re.compile(r"</body\b[^>]*>", re.IGNORECASE)
# Attributes as the HTML tokenizer reads them (and as html.parser's attrfind does).
_ATTRIBUTE = re.compile(
    r"""([^\s/>"'=][^\s/>=]*)               # name
        (?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?   # value: double, single, unquoted
    """,
    re.VERBOSE,
)
_ENTITY = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([a-zA-Z][a-zA-Z0-9]*)(;?))")
_HTTP = re.compile(r"https?://", re.IGNORECASE)
_TAG_PART = re.compile(r"[A-Za-z0-9_-]{1,256}")
_ASCII_WHITESPACE = "\t\n\f\r "
_URL_NOISE = re.compile(r"[\t\n\r]")
_PLACEHOLDER = "{{ses:openTracker}}"

# Invalid code points and C1 controls map as the HTML standard's tokenizer maps them.
_NUMERIC_REPLACEMENTS = {
    0x00: "\ufffd",
    0x80: "\u20ac",
    0x82: "\u201a",
    0x83: "\u0192",
    0x84: "\u201e",
    0x85: "\u2026",
    0x86: "\u2020",
    0x87: "\u2021",
    0x88: "\u02c6",
    0x89: "\u2030",
    0x8A: "\u0160",
    0x8B: "\u2039",
    0x8C: "\u0152",
    0x8E: "\u017d",
    0x91: "\u2018",
    0x92: "\u2019",
    0x93: "\u201c",
    0x94: "\u201d",
    0x95: "\u2022",
    0x96: "\u2013",
    0x97: "\u2014",
    0x98: "\u02dc",
    0x99: "\u2122",
    0x9A: "\u0161",
    0x9B: "\u203a",
    0x9C: "\u0153",
    0x9E: "\u017e",
    0x9F: "\u0178",
}


def _numeric(code: int) -> str:
    if code in _NUMERIC_REPLACEMENTS:
        return _NUMERIC_REPLACEMENTS[code]
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return chr(code)


def unescape_attribute(value: str) -> str:
    """Decode character references as a browser does inside an attribute value.

    Unlike `html.unescape`, a named reference without `;` followed by `=` or an
    alphanumeric stays as written, so `?a=1&copy=2` keeps its `&copy=`.
    """
    if "&" not in value:
        return value
    if value.count("&") == value.count("&amp;"):
        return value.replace("&amp;", "&")  # what links mostly hold, at C speed

    def replace(match: re.Match[str]) -> str:
        hex_digits, digits, name, semicolon = match.groups()
        if hex_digits is not None:
            return _numeric(int(hex_digits, 16))
        if digits is not None:
            return _numeric(int(digits))
        if semicolon and f"{name};" in html5:
            return html5[f"{name};"]
        following = value[match.end() : match.end() + 1]
        if not semicolon and name in html5 and following != "=":
            return html5[name]
        # A legacy name followed by more letters ("&notit;") decodes its longest prefix,
        # except in attributes, where the standard leaves it alone.
        return match.group(0)

    return _ENTITY.sub(replace, value)


def parse_link_tags(text: str) -> dict[str, tuple[str, ...]]:
    """`ses:tags="k:v;k2:v2"` as SES's linkTags; malformed entries are left out."""
    tags: dict[str, list[str]] = {}
    for entry in text.split(";"):
        name, sep, value = (part.strip() for part in entry.partition(":"))
        if sep and _TAG_PART.fullmatch(name) and _TAG_PART.fullmatch(value):
            tags.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in tags.items()}


# Link, Edit and Plan are made for every link of every message: as named tuples, which
# are as immutable as frozen dataclasses and built five times faster (bench/rewrite.py).
class Link(NamedTuple):
    """A link to track: where it points and where its `href` value sits."""

    link_index: int
    url: str
    """The destination: entities decoded, surrounding whitespace trimmed."""
    tags: Mapping[str, tuple[str, ...]]
    element: str
    """The element's name, lowercased: `a`, `area` or a VML element such as `v:roundrect`."""
    start: int
    end: int
    """`doc[start:end]` is the attribute value as written (without its quotes)."""
    quoted: bool
    original: str
    """The attribute value as written, kept when click tracking is off."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Scan:
    """What tracking would change in one document."""

    links: tuple[Link, ...]
    removals: tuple[tuple[int, int], ...]
    """Spans of `ses:no-track` and `ses:tags` attributes (with the space before them)."""
    pixel_at: int
    """Where the pixel goes: before the last `</body>`, or the end of the document."""
    placeholder: tuple[int, int] | None
    """The first `{{ses:openTracker}}`, which takes the pixel's place when present."""


def _destination(value: str, decode: Callable[[str], str] | None) -> str | None:
    """The http(s) URL an `href` value as written points to; None for anything else."""
    if decode is not None and not value.isascii():
        try:
            value = decode(value)
        except UnicodeError:
            return None  # bytes that are not text in the part's charset: left alone
    url = unescape_attribute(value).strip(_ASCII_WHITESPACE)
    if not url.isprintable():
        url = _URL_NOISE.sub("", url)  # tabs and line breaks inside, which browsers drop
        if not url.isprintable():
            return None
    if not _HTTP.match(url) or len(url) <= len("https://"):
        return None
    return url


def _value_group(attribute: re.Match[str]) -> int | None:
    """The group of `_ATTRIBUTE` that holds the value (2 double-quoted, 3 single-quoted,
    4 unquoted); None when the attribute has no value."""
    group = attribute.lastindex
    return group if group is not None and group > 1 else None


def _attribute_span(doc: str, attribute: re.Match[str], attributes_at: int) -> tuple[int, int]:
    """Where an attribute to remove is, with the whitespace before it."""
    start = attribute.start()
    while start > attributes_at and doc[start - 1] in _ASCII_WHITESPACE:
        start -= 1
    return start, attribute.end()


def _scan_tag(  # noqa: PLR0917 (a private helper of scan, called once)
    doc: str,
    match: re.Match[str],
    links: list[Link],
    removals: list[tuple[int, int]],
    decode: Callable[[str], str] | None,
    first_index: int,
) -> None:
    href: re.Match[str] | None = None
    no_track = False
    tags: Mapping[str, tuple[str, ...]] = {}
    seen: set[str] = set()  # the ses:* attributes met: the first of duplicates counts
    attributes_at = match.start(2)
    for attribute in _ATTRIBUTE.finditer(doc, attributes_at, match.end(2)):
        attribute_name = attribute[1].lower()
        if attribute_name == "href":
            if href is None:  # the first of duplicate attributes wins, as in browsers
                href = attribute
        elif attribute_name in ("ses:no-track", "ses:tags"):
            removals.append(_attribute_span(doc, attribute, attributes_at))  # every one goes
            if attribute_name in seen:
                continue
            seen.add(attribute_name)
            if attribute_name == "ses:no-track":
                no_track = True
            else:
                group = _value_group(attribute)
                tags = parse_link_tags(unescape_attribute(attribute[group] if group else ""))
    if href is None or no_track:
        return
    group = _value_group(href)
    if group is None:
        return
    url = _destination(href[group], decode)
    if url is None:
        return
    links.append(
        Link(
            link_index=first_index + len(links),
            url=url,
            tags=tags,
            element=match[1].lower(),
            start=href.start(group),
            end=href.end(group),
            quoted=group != 4,
            original=href[group],
        )
    )


def scan(doc: str, *, decode: Callable[[str], str] | None = None, first_index: int = 0) -> Scan:
    """Find the links, the `ses:*` attributes and the pixel's place in `doc`.

    `decode` turns an attribute value as written into text, for documents held as
    latin-1 stand-ins for their bytes (see `rewrite`); it may raise UnicodeError.
    Links are numbered from `first_index`, so that a message's parts number on.
    """
    links: list[Link] = []
    removals: list[tuple[int, int]] = []
    body_end = -1
    size = len(doc)
    pos = 0
    while True:
        pos = _SKIP.match(doc, pos).end()  # type: ignore[union-attr]
        if pos >= size:
            break
        if doc.startswith("</", pos):  # </body: _SKIP stops at nothing else that starts so
            end_body = _END_BODY.match(doc, pos)
            if end_body is None:
                break  # "</body" that never ends: the rest is inside that tag
            body_end = pos
            pos = end_body.end()
            continue
        tag = _START_TAG.match(doc, pos)
        if tag is None:
            break  # a tag that never ends: the rest of the document is inside it
        _scan_tag(doc, tag, links, removals, decode, first_index)
        pos = tag.end()
    placeholder_at = doc.find(_PLACEHOLDER)
    return Scan(
        links=tuple(links),
        removals=tuple(removals),
        pixel_at=body_end if body_end >= 0 else size,
        placeholder=(
            (placeholder_at, placeholder_at + len(_PLACEHOLDER)) if placeholder_at >= 0 else None
        ),
    )


def pixel_html(url: str) -> str:
    """The open-tracking image, as SES writes it."""
    return f'<img alt="" src="{escape(url)}" style="display: none; width: 1px; height: 1px;">'


class Edit(NamedTuple):
    """One change: `doc[start:end]` becomes a link's tracking URL (`link`), the pixel
    (`pixel`), or nothing (a removed `ses:*` attribute)."""

    start: int
    end: int
    link: Link | None = None
    pixel: bool = False


def edits(found: Scan, *, links: bool, pixel: bool) -> list[Edit]:
    """The changes tracking makes to a scanned document, in document order. The `ses:*`
    attributes go whatever is tracked."""
    changes = [Edit(start=start, end=end) for start, end in found.removals]
    if links:
        changes += [Edit(start=link.start, end=link.end, link=link) for link in found.links]
    if pixel:
        start, end = found.placeholder or (found.pixel_at, found.pixel_at)
        changes.append(Edit(start=start, end=end, pixel=True))
    changes.sort(key=lambda edit: (edit.start, edit.end))
    return changes


class Plan(NamedTuple):
    """Text cut at the places tracking changes, ready to render per recipient."""

    pieces: tuple[str, ...]
    """The unchanged text between the slots: one more piece than there are slots."""
    slots: tuple[Link | None, ...]
    """What goes between pieces: a link's new href value, or None for the pixel."""

    def render(self, *, open_url: str | None, click_url: Callable[[Link], str] | None) -> str:
        """The text with tracking for one recipient. With `click_url` None, links keep
        their original value; with `open_url` None, there is no pixel."""
        pieces = self.pieces
        out = [pieces[0]]
        for number, slot in enumerate(self.slots, 1):
            if slot is None:
                if open_url is not None:
                    out.append(pixel_html(open_url))
            elif click_url is None:
                out.append(slot.original)
            elif slot.quoted:
                out.append(escape(click_url(slot)))
            else:
                out.append(f'"{escape(click_url(slot))}"')
            out.append(pieces[number])
        return "".join(out)


def plan(doc: str, changes: Sequence[Edit], start: int = 0, end: int | None = None) -> Plan:
    """Cut `doc[start:end]` at the `changes` inside it (none may cross its bounds)."""
    end = len(doc) if end is None else end
    pieces: list[str] = []
    slots: list[Link | None] = []
    piece = ""  # the text kept since the last slot (removed attributes leave gaps in it)
    pos = start
    for edit in changes:
        if edit.start < start or edit.end > end:
            continue
        piece += doc[pos : edit.start]
        pos = edit.end
        if edit.link is None and not edit.pixel:
            continue  # a removed attribute: its text is simply left out
        pieces.append(piece)
        piece = ""
        slots.append(edit.link)
    pieces.append(piece + doc[pos:end])
    return Plan(pieces=tuple(pieces), slots=tuple(slots))
