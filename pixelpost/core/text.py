"""Finds the http(s) URLs of a text/plain body as a mail client links them, and SES's
unsubscribe placeholders, as `splice` edits for the tracking rewrite (`rewrite`).

A URL starts with `http://` or `https://` (any case) that no ASCII letter, digit or "_"
comes right before, and a host that starts with a letter or digit. It ends before
whitespace, a control character, `<`, `>`, `"` or U+FF5C (linkify-it's separators), and
then loses its trailing `.,:;!?'` and any closing `)` or `]` without its opening
partner inside it, as linkify-it (markdown-it's linkifier) and GitHub's autolinks read
it; in angle brackets (`<https://…>`, `<URL:https://…>`, RFC 3986 appendix C) it runs
to the `>` and keeps everything before it. URLs over `MAX_URL` characters, and those a
browser would not go to (`html.navigable`), stay as they are.

Every URL is found in time linear in the body: each character is read a bounded number
of times, however many URLs a line holds and however long it is.

In `format=flowed` text (RFC 3676) a line that ends in a space goes on on the next
one. With `delsp=no` that space stays in the text, so a URL (which ends at whitespace)
is never split by a soft break and the line's own text is read. With `delsp=yes` the
space goes and the lines join without one: the joined paragraph is read (quote marks
and space-stuffing left out), and a URL that runs over a soft break is left untracked,
since rewriting one line of it would leave its other half behind.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from pixelpost.core.html import navigable
from pixelpost.core.splice import Edit, Link, placeholders

MAX_URL = 2048
"""Characters of the longest URL tracked; a longer one stays as written."""

_URL = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[!#-;=?-~]*+")
"""A URL's scheme and the printable ASCII but `"<>` after it, at C speed; past ASCII,
`_read` reads on. Matched where a "://" that `str.find` found allows it: a search for
it that ignores case would take ten times longer."""
# What ends a URL: ASCII only for a text held as a latin-1 stand-in for its bytes (a
# byte above 0x7F is then part of a character, read once decoded); all of it for text.
_ASCII_END = re.compile('[\\x00-\\x20\\x7f<>"]')
_END = re.compile(
    '[\\x00-\\x20\\x7f-\\xa0<>"\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\uff5c]'
)
"""Whitespace (Unicode's Z), controls (Cc) and linkify-it's separators."""
_SURROGATE = re.compile("[\ud800-\udfff]")
"""A byte that is no character of the charset, as `surrogateescape` decodes it."""
_TRAILING = frozenset(".,:;!?'")
_PARTNERS = {")": "(", "]": "["}
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_WINDOW = 256
"""Characters of a stand-in decoded first to find a URL's end (see `_decode`)."""
_QUOTE_MARKS = re.compile(">*+ ?")
_NO_TAGS: Mapping[str, tuple[str, ...]] = MappingProxyType({})
"""A text link's tags: none (`ses:tags` is HTML's)."""
_SIGNATURE = "-- "


@dataclass(frozen=True, kw_only=True, slots=True)
class Scan:
    """What tracking would change in one text."""

    links: tuple[Link, ...]
    unsubscribes: tuple[Edit, ...]


def scan(
    doc: str,
    *,
    links: bool = True,
    unsubscribe: bool = False,
    codec: str | None = None,
    first_index: int = 0,
    limit: int | None = None,
    flowed: bool = False,
    delsp: bool = False,
) -> Scan:
    """Find the URLs (with `links`) and the unsubscribe placeholders (with
    `unsubscribe`) of `doc`.

    `codec` names the charset of the bytes `doc` stands in for, one character per byte
    (see `rewrite`); None when `doc` is text. Links are numbered from `first_index`, at
    most `limit` of them. `flowed` and `delsp` are the part's RFC 3676 parameters. A URL
    that holds an unsubscribe placeholder is no link: the placeholder is filled instead.
    """
    unsubscribes = placeholders(doc) if unsubscribe else []
    found: list[Link] = []
    if links and limit != 0:
        starts = [edit.start for edit in unsubscribes]
        urls = _paragraph_urls(doc, codec) if flowed and delsp else _urls(doc, 0, len(doc), codec)
        for start, end, url in urls:
            if starts and _holds(starts, start, end):
                continue
            # link_index, url, tags, element, start, end, quoted, original (positional:
            # a third faster than by keyword, for every URL of every message)
            found.append(
                Link(
                    first_index + len(found),
                    url,
                    _NO_TAGS,
                    "text",
                    start,
                    end,
                    False,
                    doc[start:end],
                )
            )
            if len(found) == limit:
                break
    return Scan(links=tuple(found), unsubscribes=tuple(unsubscribes))


def _holds(starts: list[int], start: int, end: int) -> bool:
    """Whether a placeholder (they start at `starts`, in order) is in `[start, end)`."""
    at = bisect.bisect_left(starts, start)
    return at < len(starts) and starts[at] < end


def edits(found: Scan) -> list[Edit]:
    """The changes tracking makes to a scanned text, in order."""
    changes = [Edit(link.start, link.end, link) for link in found.links]
    if found.unsubscribes:
        changes += found.unsubscribes
        changes.sort(key=lambda edit: edit.start)
    return changes


def _urls(s: str, lo: int, hi: int, codec: str | None) -> Iterator[tuple[int, int, str]]:
    """Each URL in `s[lo:hi]`: where it is written, and where it goes."""
    pos = lo
    while (colon := s.find("://", pos, hi)) >= 0:
        pos = colon + 3
        candidate = _URL.match(s, colon - 5, hi) if colon - 5 >= lo else None
        if candidate is None and colon - 4 >= lo:
            candidate = _URL.match(s, colon - 4, hi)
        if candidate is None:
            continue  # another scheme
        at, stop = candidate.span()
        written_in = None
        if stop < hi and s[stop] > "\x7f":  # it goes on past ASCII: read it as text
            text, stop, written_in = _read(s, at, hi, codec)
        else:
            text = candidate[0]
        pos = stop
        if at > lo and s[at - 1] in _WORD:
            continue  # "xhttp://", "foohttps://": another word
        if (text[-1] in _TRAILING or text[-1] in _PARTNERS) and not (
            stop < hi and s[stop] == ">" and _bracketed(s, at)
        ):
            text = _trimmed(text)  # in "<…>" all is the URL's; else its end may be the text's
        if (found := _link(s, at, text, colon + 3 - at, written_in)) is not None:
            yield found


def _link(
    s: str, at: int, text: str, host: int, written_in: str | None
) -> tuple[int, int, str] | None:
    """Where the URL `text` (its host at `host`) is written and where it goes; None when
    it is no URL to track."""
    if len(text) > MAX_URL or len(text) <= host or not text[host].isalnum():
        return None
    if written_in is not None and _SURROGATE.search(text) is not None:
        return None  # bytes that are no text in the part's charset (nor in UTF-8)
    # What URLs mostly are: nothing for a browser to fix on the way.
    url = text if text.isprintable() and "\\" not in text else navigable(text)
    if url is None:
        return None
    if written_in is None:
        return at, at + len(text), url
    written = text.encode(written_in, "surrogateescape").decode("latin-1")
    if not s.startswith(written, at):
        return None  # a character its charset writes two ways: left as it is
    return at, at + len(written), url


def _bracketed(s: str, at: int) -> bool:
    return (at > 0 and s[at - 1] == "<") or s[max(0, at - 5) : at].upper() == "<URL:"


def _trimmed(text: str) -> str:
    """`text` without the punctuation that ends a sentence or closes what the URL did not
    open."""
    end = len(text)
    unopened: dict[str, int] | None = None  # closing brackets without a partner, by kind
    while end:
        char = text[end - 1]
        if char in _TRAILING:
            end -= 1
            continue
        if char in _PARTNERS:
            if unopened is None:
                unopened = {c: text.count(c) - text.count(o) for c, o in _PARTNERS.items()}
            if unopened[char] > 0:
                unopened[char] -= 1
                end -= 1
                continue
        break
    return text[:end]


class _Read(NamedTuple):
    text: str
    """The URL as text, up to what ends it (trailing punctuation not yet trimmed)."""
    stop: int
    """Where what ends it is written (or the end of what was read)."""
    codec: str | None
    """What `text` was decoded with; None when it is `s`'s own characters."""


def _read(s: str, at: int, hi: int, codec: str | None) -> _Read:
    """The URL written from `at`, up to the first character that ends it."""
    if codec is None:
        end = _END.search(s, at, hi)
        stop = hi if end is None else end.start()
        return _Read(s[at:stop], stop, None)
    read = _decode(s, at, hi, codec)
    if codec != "utf-8" and _SURROGATE.search(read.text) is not None:
        # Charsets are often mislabelled; UTF-8 is likeliest, as for HTML links.
        retry = _decode(s, at, hi, "utf-8")
        if _SURROGATE.search(retry.text) is None:
            return retry
    return read


def _decode(s: str, at: int, hi: int, codec: str) -> _Read:
    """`_read` of a latin-1 stand-in for bytes in `codec`. A window is decoded from `at`
    and doubled until what ends the URL is in it, so that a URL cut short by a
    non-ASCII space costs its own length, not its line's. A character the window's end
    splits decodes as surrogates, which end nothing: the next window reads it whole."""
    size = _WINDOW
    while True:
        limit = min(at + size, hi)
        end = _ASCII_END.search(s, at, limit)
        stop = limit if end is None else end.start()
        text = s[at:stop].encode("latin-1").decode(codec, "surrogateescape")
        if (cut := _END.search(text)) is not None:
            text = text[: cut.start()]
            return _Read(text, at + len(text.encode(codec, "surrogateescape")), codec)
        if end is not None or stop == hi:
            return _Read(text, stop, codec)
        size *= 2


def _paragraph_urls(doc: str, codec: str | None) -> Iterator[tuple[int, int, str]]:
    """`_urls` of flowed text with `delsp=yes`: each paragraph read as its lines joined
    (RFC 3676 §4.2, without quote marks and space-stuffing), and only the URLs that a
    soft break does not split."""
    paragraph: list[tuple[int, int]] = []  # the text of each of its lines, in `doc`
    depth = 0
    pos, size = 0, len(doc)
    while pos < size:
        line_end = doc.find("\n", pos)
        line_end = size if line_end < 0 else line_end
        end = line_end - 1 if line_end > pos and doc[line_end - 1] == "\r" else line_end
        marks = _QUOTE_MARKS.match(doc, pos, end)
        assert marks is not None  # it matches the empty string
        start = marks.end()
        quote_depth = marks[0].count(">")
        soft = end > start and doc[end - 1] == " " and doc[start:end] != _SIGNATURE
        if paragraph and quote_depth != depth:  # a change of depth ends a paragraph
            yield from _joined_urls(doc, paragraph, codec)
            paragraph = []
        depth = quote_depth
        paragraph.append((start, end - 1 if soft else end))  # delsp: the space is no text
        if not soft:
            yield from _joined_urls(doc, paragraph, codec)
            paragraph = []
        pos = line_end + 1
    yield from _joined_urls(doc, paragraph, codec)


def _joined_urls(
    doc: str, paragraph: list[tuple[int, int]], codec: str | None
) -> Iterator[tuple[int, int, str]]:
    if len(paragraph) <= 1:
        for start, end in paragraph:
            yield from _urls(doc, start, end, codec)
        return
    offsets = []
    length = 0
    for start, end in paragraph:
        offsets.append(length)
        length += end - start
    joined = "".join(doc[start:end] for start, end in paragraph)
    for start, end, url in _urls(joined, 0, len(joined), codec):
        line = bisect.bisect_right(offsets, start) - 1
        line_start, line_end = paragraph[line]
        at = line_start + start - offsets[line]
        if at + end - start <= line_end:
            yield at, at + end - start, url
