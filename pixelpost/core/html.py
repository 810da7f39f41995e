"""Finds what tracking changes in an HTML document, without re-serializing it.

`scan` reads the document once and returns its links (`<a href>`, `<area href>` and the
`href` of VML elements such as Outlook's `<v:roundrect>`), the `ses:no-track` and
`ses:tags` attributes to remove, where the open pixel goes and, when asked, SES's
`{{amazonSESUnsubscribeUrl}}` placeholders. `splice.Plan.render` then writes the
document with only those spans replaced, so every other character (Outlook conditional
comments, entity spelling, quoting, whitespace) stays exactly as it was.

Where a tag, an attribute value, a comment or a text-only element starts and ends
follows the WHATWG tokenizer, which is what browsers run (`tests/html5.py` holds the
differential test against html5lib). The states it models:

- data, tag open, end tag open, tag name; before-attribute-name, attribute-name,
  after-attribute-name, before-attribute-value and the three attribute-value states
  (a quote opens a value only right after "="; a tag whose value never closes never
  ends), after-attribute-value-quoted, self-closing-start-tag;
- markup declaration open; the comment states, with "-->" and "--!>" as endings and the
  abrupt "<!-->" and "<!--->"; bogus comments ("<?", "<!" other than "--", "</" and no
  letter, and "<![CDATA[", which in HTML content is one), ending at the first ">";
  DOCTYPE, which ends at the first ">" too; "</>", which is nothing;
- RCDATA (`title`, `textarea`), RAWTEXT (`style`, `xmp`, `iframe`, `noembed`,
  `noframes`), each to its own end tag; script data with its escaped and double-escaped
  states; PLAINTEXT, which takes the rest of the document.

What it deliberately does not model: character references in text (only attribute
values are decoded, as links need); `noscript` is markup, as in a parser without
scripting (html5lib's, and mail clients'); foreign content (`<svg>`, `<math>`), where
a browser reads `<style>` and `<title>` as markup and `<![CDATA[` as CDATA; and the
inside of an Outlook conditional comment (`<!--[if mso]> … <![endif]-->`), which every
browser reads as a comment, is markup here, because Outlook renders it. It is read as
a document of its own that ends where a browser's comment ends (the first "-->" or
"--!>"), so that a tag, comment or text-only element it leaves open ends there too, and
whatever follows is read as every browser reads it.

The pixel goes before the last `</body>`; without one, before the last `</html>`;
without that, before whatever takes the rest of the document (a tag or comment that
never ends, raw text without its end tag, PLAINTEXT), so that it is always an image a
browser loads; else at the end.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.entities import html5
from urllib.parse import quote

from pixelpost.core.splice import (
    UNSUBSCRIBE_PLACEHOLDER,
    Edit,
    Link,
    Plan,
    Slot,
    pixel_html,
    placeholders,
    plan,
)

__all__ = [
    "RAW_TEXT",
    "Edit",
    "Link",
    "Plan",
    "Scan",
    "Slot",
    "edits",
    "navigable",
    "parse_link_tags",
    "pixel_html",
    "plan",
    "scan",
    "unescape_attribute",
]

_WS = "\t\n\f\r "
"""ASCII whitespace as the tokenizer knows it (CR too: the input stream turns it into LF)."""
# A tag's attributes up to its ">", as the WHATWG tokenizer reads them: a quote opens a
# value only right after "=" (anywhere else it is part of an attribute's name), a value
# in quotes may hold ">" or "<a ...>" as text, and a tag whose value never closes never
# ends. Between "<name" and ">": whitespace and "/" (before-attribute-name state), then
# a name, whose first character may be "=" (attribute-name state), then, after optional
# whitespace, "=" and a value (before-attribute-value state): double-quoted,
# single-quoted, unquoted or missing ("a=>"); or no "=" at all (after-attribute-name
# state). Possessive throughout: a tag that never ends fails in linear time.
_ATTRIBUTES = (
    rf"""(?:[{_WS}/]*+[^{_WS}/>][^{_WS}/>=]*+"""
    rf"""(?:="[^"]*+"|[{_WS}]*+=[{_WS}]*+(?:"[^"]*+"|'[^']*+'|[^{_WS}>"'][^{_WS}>]*+|(?=>))"""
    rf"""|(?![{_WS}]*+=)))*+[{_WS}/]*+"""
)
_ATTRIBUTES_END = _ATTRIBUTES + ">"
_TAG_REST = rf"[^{_WS}/>]*+{_ATTRIBUTES_END}"
_END = rf"(?=[{_WS}/>])"
"""What ends a tag's name."""
RAW_TEXT = ("style", "xmp", "iframe", "noembed", "noframes", "title", "textarea")
"""Elements whose content is text up to their end tag (RAWTEXT and RCDATA)."""


def _raw_text(name: str) -> str:
    """`name`'s start tag and content, up to (not including) its end tag, which must be
    there: without one, the element takes the rest of the document."""
    return (
        rf"(?i:{name}){_END}{_ATTRIBUTES_END}[^<]*+(?:<(?!/(?i:{name}){_END})[^<]*+)*+"
        rf"(?=</(?i:{name}){_END})"
    )


# What follows a "<" that is skipped, in order; the "<" is matched once, so that each
# alternative is ruled out by its first character. A construct that would run to the
# end of the document (a tag or comment that never ends, raw text without its end tag)
# is not skipped: `scan` stops there and puts the pixel before it.
_SKIPPED = "|".join(
    [
        # the common tags first: names that cannot start anything special
        r"[b-hB-Hj-mJ-MoOqQrRuUwWyYzZ]" + _TAG_REST,
        # end tags, but for </body> and </html>
        r"/[ac-gi-zAC-GI-Z]" + _TAG_REST,
        rf"/[bB](?!(?i:ody){_END})" + _TAG_REST,
        rf"/[hH](?!(?i:tml){_END})" + _TAG_REST,
        # the other tags whose names start like a special one (td, strong, abbr, …)
        rf"[tT](?!(?i:itle|extarea){_END})" + _TAG_REST,
        rf"[sS](?!(?i:cript|tyle){_END})" + _TAG_REST,
        rf"[aA](?!{_END}|(?i:rea){_END})" + _TAG_REST,
        r"[vV](?!:)" + _TAG_REST,
        rf"[iI](?!(?i:frame){_END})" + _TAG_REST,
        rf"[nN](?!(?i:oembed|oframes){_END})" + _TAG_REST,
        rf"[pP](?!(?i:laintext){_END})" + _TAG_REST,
        rf"[xX](?!(?i:mp){_END})" + _TAG_REST,
        # a comment: to "-->" or "--!>"; "<!-->" and "<!--->" end where they start.
        # Not Outlook's "<!--[if mso]>", whose inside `scan` reads (see _CONDITIONAL)
        r"!--(?!\[if[^\]>]*+\]>(?!<!--))(?:>|->|[^-]*+(?:-(?!-!?>)[^-]*+)*+--!?>)",
        # bogus comments, to the first ">": "<!DOCTYPE", "<![CDATA[" (in HTML content),
        # "<!x" (Outlook's "<![if !mso]>" and "<![endif]>" too), "<?x", "</" and no
        # letter; "</>" is dropped
        r"!(?!--)[^>]*+>",
        r"\?[^>]*+>",
        r"/(?:>|[^a-zA-Z>][^>]*+>)",
        # script without "<!--" in it (which changes where it ends), up to its end tag
        rf"(?i:script){_END}{_ATTRIBUTES_END}[^<]*+(?:<(?!/(?i:script){_END}|!--)[^<]*+)*+"
        rf"(?=</(?i:script){_END})",
        *(_raw_text(name) for name in RAW_TEXT),
        # a "<" that starts nothing is text
        r"(?![a-zA-Z/!?])",
    ]
)
# Everything up to the next link, </body>, </html> or construct the skipping above
# leaves to `scan`, in one C-level match.
_SKIP = re.compile(rf"(?:[^<]*+<(?:{_SKIPPED}))*+[^<]*+")
_LINK_TAG = re.compile(rf"<((?i:a|area){_END}|[vV]:[^{_WS}/>]*+)({_ATTRIBUTES})>")
_SCRIPT = re.compile(rf"<(?i:script){_END}{_ATTRIBUTES_END}")
_PLAINTEXT = re.compile(rf"<(?i:plaintext){_END}")
# Script data, escaped ("<!--" … "-->") and double-escaped ("<!--<script>" …
# "</script>"): where each of the tokenizer's script states changes to another.
_SCRIPT_DATA = re.compile(rf"<(?:(/)(?i:script){_END}|!--)")
_SCRIPT_ESCAPE_CLOSED = re.compile(r"-*+>")
# "-->" after any number of dashes, looked for where a run of dashes starts: trying at
# every dash of a long run would be quadratic.
_SCRIPT_ESCAPED = re.compile(rf"(?<!-)--++>|<(/?)(?i:script)[{_WS}/>]")
_SCRIPT_DOUBLE_ESCAPED = re.compile(rf"(?<!-)--++>|</(?i:script)[{_WS}/>]")
# Outlook's conditional comment, "<!--[if mso]> … <![endif]-->": a comment to every
# browser (to its first "-->" or "--!>"), markup to Outlook. Its inside is read as a
# document of its own, so that what it leaves open does not run on past it. (The form
# "<!--[if !mso]><!--> … <!--<![endif]-->" is markup to every reader.)
_CONDITIONAL = re.compile(r"<!--\[if[^\]>]*+\]>(?!<!--)")
_COMMENT_END = re.compile(r"--!?>")
_CONDITIONAL_END = "<![endif]"
_DOCUMENT_END = re.compile(rf"</((?i:body|html)){_END}{_ATTRIBUTES_END}")
# One attribute of a tag that _ATTRIBUTES has read, as it reads it: the separators
# before it, its name, its value in group 2 (double-quoted), 3 (single-quoted) or 4
# (unquoted).
_ATTRIBUTE = re.compile(
    rf"""[{_WS}/]*+([^{_WS}/>][^{_WS}/>=]*+)
        (?:[{_WS}]*+=[{_WS}]*+(?:"([^"]*+)"|'([^']*+)'|([^{_WS}>"'][^{_WS}>]*+)|\Z))?""",
    re.VERBOSE,
)
_ENTITY = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([a-zA-Z][a-zA-Z0-9]*)(;?))")
_PLAIN_URL = re.compile(r"https?://[^/\\]", re.IGNORECASE)
_URL_START = re.compile(r"(https?):[/\\]*+([^/\\?#]*+)", re.IGNORECASE)
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_IGNORED_IN_HOST = dict.fromkeys(
    [0xAD, 0x34F, 0x180B, 0x180C, 0x180D, 0x200B, 0x2060, 0xFEFF, *range(0xFE00, 0xFE10)]
)
"""Characters UTS 46 maps to nothing in a host name (soft hyphen, zero width space …)."""
_TAG_PART = re.compile(r"[A-Za-z0-9_-]{1,256}")
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


def _number(digits: str, base: int) -> int:
    """The value of a numeric reference's digits; any number past the last code point
    reads as one past it (and then as U+FFFD), however many digits it has."""
    digits = digits.lstrip("0")
    return int(digits or "0", base) if len(digits) <= 8 else 0x110000


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
            return _numeric(_number(hex_digits, 16))
        if digits is not None:
            return _numeric(_number(digits, 10))
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
    unsubscribes: tuple[Edit, ...] = ()
    """Every `{{amazonSESUnsubscribeUrl}}`, when asked for."""


def _destination(value: str, decode: Callable[[str], str] | None) -> str | None:
    """The http(s) URL an `href` value as written points to; None for anything else."""
    if decode is not None and not value.isascii():
        try:
            value = decode(value)
        except UnicodeError:
            return None  # bytes that are not text in the part's charset: left alone
    # The tokenizer reads a NUL in an attribute value as U+FFFD, which is not trimmed.
    url = unescape_attribute(value.replace("\0", "\ufffd")).strip(_C0_OR_SPACE)
    if url.isprintable() and "\\" not in url and _PLAIN_URL.match(url):
        return url  # what links mostly are: nothing for a browser to fix
    return navigable(url)


def navigable(url: str) -> str | None:
    """Where a browser goes for an http(s) URL written unusually, or None where it goes
    nowhere or elsewhere (another scheme, no host, a host with spaces or controls in it).

    As the URL standard reads special schemes: tabs and line breaks are dropped, any run
    of "/" and "\\" after the scheme (none included) reads as "//", and "\\" in the
    path as "/"; characters that UTS 46 ignores leave the host. Characters that cannot be
    seen (no-break space, zero width space, soft hyphen, controls) are percent-encoded
    in the rest, as the browser sends them; other non-ASCII stays readable here, and the
    tracker's redirect encodes it.
    """
    url = _URL_NOISE.sub("", url)
    start = _URL_START.match(url)
    if start is None:
        return None
    host = start[2].translate(_IGNORED_IN_HOST)
    if not host or not host.isprintable() or " " in host:
        return None
    rest = url[start.end() :]
    path_end = next((at for at, char in enumerate(rest) if char in "?#"), len(rest))
    rest = rest[:path_end].replace("\\", "/") + rest[path_end:]
    if not rest.isprintable():
        rest = "".join(char if char.isprintable() else quote(char, safe="") for char in rest)
    return f"{start[1]}://{host}{rest}"


def _value_group(attribute: re.Match[str]) -> int | None:
    """The group of `_ATTRIBUTE` that holds the value (2 double-quoted, 3 single-quoted,
    4 unquoted); None when the attribute has no value."""
    group = attribute.lastindex
    return group if group is not None and group > 1 else None


def _attribute_span(doc: str, attribute: re.Match[str], attributes_at: int) -> tuple[int, int]:
    """Where an attribute to remove is, with the whitespace before it."""
    start = attribute.start(1)
    while start > attributes_at and doc[start - 1] in _WS:
        start -= 1
    return start, attribute.end()


def _scan_tag(  # noqa: PLR0917 (a private helper of scan, called once)
    doc: str,
    match: re.Match[str],
    links: list[Link],
    removals: list[tuple[int, int]],
    decode: Callable[[str], str] | None,
    first_index: int,
    unsubscribe: bool,
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
    if unsubscribe and UNSUBSCRIBE_PLACEHOLDER in href[group]:
        return  # an unsubscribe link: never through the click redirect, which scanners follow
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


def _script_end(doc: str, pos: int, limit: int) -> int:
    """Where the end tag of a script whose content starts at `pos` starts, or -1 when
    the script takes the rest of the document (which ends at `limit`). In script data a
    "<!--" escapes; in escaped script "-->" unescapes, "</script" ends the script and
    "<script" escapes doubly; in double-escaped script "-->" unescapes and "</script"
    does not end the script but escapes it singly again."""
    while True:
        found = _SCRIPT_DATA.search(doc, pos, limit)
        if found is None:
            return -1
        if found[1]:
            return found.start()
        pos = found.end()
        if (closed := _SCRIPT_ESCAPE_CLOSED.match(doc, pos, limit)) is not None:
            pos = closed.end()  # "<!-->", "<!--->": escaped and unescaped at once
            continue
        while True:  # escaped
            found = _SCRIPT_ESCAPED.search(doc, pos, limit)
            if found is None:
                return -1
            if found[1]:
                return found.start()
            pos = found.end()
            if found[0][0] == "-":
                break  # back to script data
            found = _SCRIPT_DOUBLE_ESCAPED.search(doc, pos, limit)
            if found is None:
                return -1
            pos = found.end()
            if found[0][0] == "-":
                break


def _inside(doc: str, pos: int) -> tuple[int, int] | None:
    """Where the inside of a conditional comment that starts at `pos` ends (before its
    "<![endif]"), and where its comment ends; None when it never ends."""
    close = _COMMENT_END.search(doc, pos)
    if close is None:
        return None
    end = close.start()
    if doc.endswith(_CONDITIONAL_END, pos, end):
        end -= len(_CONDITIONAL_END)
    return end, close.end()


def scan(
    doc: str,
    *,
    decode: Callable[[str], str] | None = None,
    first_index: int = 0,
    unsubscribe: bool = False,
) -> Scan:
    """Find the links, the `ses:*` attributes and the pixel's place in `doc`.

    `decode` turns an attribute value as written into text, for documents held as
    latin-1 stand-ins for their bytes (see `rewrite`); it may raise UnicodeError.
    Links are numbered from `first_index`, so that a message's parts number on. With
    `unsubscribe`, every `{{amazonSESUnsubscribeUrl}}` is found too, and a link whose
    `href` holds one is no link to track.
    """
    links: list[Link] = []
    removals: list[tuple[int, int]] = []
    ends = {"body": -1, "html": -1}  # where the last </body> and </html> start
    swallowed = -1  # where a construct that takes the rest of the document starts
    size = len(doc)
    limit = size  # where the document being read ends: `doc`'s end, or a conditional's
    resume = size  # where reading goes on after a conditional comment
    pos = 0
    while True:
        pos = _SKIP.match(doc, pos, limit).end()  # type: ignore[union-attr]
        if pos >= limit:
            if limit == size:
                break
            pos, limit = resume, size  # out of a conditional comment
            continue
        if (conditional := _CONDITIONAL.match(doc, pos, limit)) is not None:
            pos = conditional.end()
            if limit == size:  # (inside one, "<!--[if" is text of it)
                if (inside := _inside(doc, pos)) is None:
                    swallowed = conditional.start()  # a comment that never ends
                    break
                limit, resume = inside
        elif (tag := _LINK_TAG.match(doc, pos, limit)) is not None:
            _scan_tag(doc, tag, links, removals, decode, first_index, unsubscribe)
            pos = tag.end()
        elif (end_tag := _DOCUMENT_END.match(doc, pos, limit)) is not None:
            if limit == size:  # not inside a comment
                ends[end_tag[1].lower()] = pos
            pos = end_tag.end()
        elif (script := _SCRIPT.match(doc, pos, limit)) is not None and (
            after := _script_end(doc, script.end(), limit)
        ) >= 0:
            pos = after
        elif limit < size:  # what a conditional leaves open ends with it
            pos, limit = resume, size
        else:  # a tag, comment or element that takes the rest of the document
            swallowed = pos
            break
    placeholder_at = doc.find(_PLACEHOLDER)
    return Scan(
        links=tuple(links),
        removals=tuple(removals),
        pixel_at=next((at for at in (ends["body"], ends["html"], swallowed) if at >= 0), size),
        placeholder=(
            (placeholder_at, placeholder_at + len(_PLACEHOLDER)) if placeholder_at >= 0 else None
        ),
        unsubscribes=tuple(placeholders(doc)) if unsubscribe else (),
    )


def edits(found: Scan, *, links: bool, pixel: bool, unsubscribe: bool = False) -> list[Edit]:
    """The changes tracking makes to a scanned document, in document order. The `ses:*`
    attributes go whenever links or the pixel are tracked, whether or not a link is (an
    unsubscribe placeholder inside one goes with it)."""
    removals = found.removals if links or pixel else ()
    changes = [Edit(start, end) for start, end in removals]
    if links:
        changes += [Edit(link.start, link.end, link) for link in found.links]
    if pixel:
        start, end = found.placeholder or (found.pixel_at, found.pixel_at)
        changes.append(Edit(start, end, Slot.PIXEL))
    if unsubscribe:
        starts = [start for start, _ in removals]
        changes += [edit for edit in found.unsubscribes if not _removed(edit, removals, starts)]
    changes.sort(key=lambda edit: (edit.start, edit.end))
    return changes


def _removed(edit: Edit, removals: tuple[tuple[int, int], ...], starts: list[int]) -> bool:
    """Whether `edit` lies in one of the `removals` (which start at `starts`, in order)."""
    at = bisect.bisect_right(starts, edit.start) - 1
    return at >= 0 and edit.start < removals[at][1]
