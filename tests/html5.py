"""The reference: html5lib, the WHATWG tokenizer and tree builder in Python, asked which
links a browser would find and whether the pixel is an image it would load.

html5lib reports tokens, not where they are, so links compare by value in document
order. The tree builder drives the tokenizer (it is what switches to RAWTEXT, RCDATA,
script data and PLAINTEXT), so the tokens are taken as the parser reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from html5lib import _tokenizer, html5parser
from html5lib.constants import tokenTypes

_START = tokenTypes["StartTag"]
_COMMENT = tokenTypes["Comment"]
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TRACKABLE = re.compile(r"https?://[^/\\?#]", re.IGNORECASE)
# By design, pixelpost reads what Outlook renders: the inside of a conditional comment
# (which every other reader takes as a comment) is markup.
_CONDITIONAL = re.compile(r"\[if[^\]]*\]>(.*)<!\[endif\]$", re.DOTALL)


class _Tap(_tokenizer.HTMLTokenizer):
    """The tokenizer, also keeping each start tag and comment token it yields."""

    tokens: list[dict[str, Any]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for token in super().__iter__():
            if token["type"] in (_START, _COMMENT):
                self.tokens.append(dict(token))
            yield token


class _Parser(html5parser.HTMLParser):  # type: ignore[misc]
    tokens: list[dict[str, Any]]

    def mainLoop(self) -> None:
        self.tokens = []
        self.tokenizer.__class__ = _Tap
        self.tokenizer.tokens = self.tokens
        super().mainLoop()


def tokens(doc: str) -> list[dict[str, Any]]:
    """The start tag and comment tokens of `doc`, in order, as a browser's parser reads
    them (attributes as a dict in which the first of duplicates counts)."""
    parser = _Parser(namespaceHTMLElements=False)
    parser.parse(doc)
    return parser.tokens


def is_link_element(name: str) -> bool:
    return name in ("a", "area") or name.startswith("v:")


def trackable(href: str) -> str | None:
    """An href as decoded, the way a browser reads it for navigation, when it is a plain
    http(s) URL."""
    url = re.sub(r"[\t\n\r]", "", href.strip(_C0_OR_SPACE))
    return url if _TRACKABLE.match(url) else None


def links(doc: str, *, elements: tuple[str, ...] | None = None) -> list[str]:
    """The trackable links a browser finds in `doc` (and Outlook, inside conditional
    comments), in document order; only on `elements` when given."""
    found: list[str] = []
    for token in tokens(doc):
        if token["type"] == _COMMENT:
            conditional = _CONDITIONAL.match(token["data"])
            if conditional:
                found += links(conditional[1], elements=elements)
            continue
        name, attributes = token["name"], token["data"]
        if not is_link_element(name) or (elements is not None and name not in elements):
            continue
        if "ses:no-track" in attributes or "href" not in attributes:
            continue
        url = trackable(attributes["href"])
        if url is not None:
            found.append(url)
    return found


def images(doc: str) -> list[str]:
    """The src of every img start tag a browser's parser reads in `doc`."""
    return [
        token["data"].get("src", "")
        for token in tokens(doc)
        if token["type"] == _START and token["name"] == "img"
    ]


def filled(doc: str) -> str:
    """A template's {{placeholders}} filled with real links (most of its hrefs), so that
    a differential sees real links in real layouts."""
    doc = re.sub(r"\{\{\s*(\w+)\s*\}\}", r"https://example.com/\1?a=1&amp;b=2", doc)
    return doc.replace('href="#"', 'href="https://example.com/#top"')
