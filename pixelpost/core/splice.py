"""A document cut where tracking changes it, written again for each recipient.

The HTML scan (`html`) and the plain-text scan (`text`) both say what they change as
`Edit`s; `plan` cuts the document at them once, and `Plan.render` fills the slots for
one recipient: a link's tracking URL, the open pixel, or the unsubscribe URL that
stands for SES's `{{amazonSESUnsubscribeUrl}}`. Everything between the slots is the
document's own text, untouched.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import NamedTuple

UNSUBSCRIBE_PLACEHOLDER = "{{amazonSESUnsubscribeUrl}}"
"""What SES replaces with the recipient's unsubscribe link, in HTML and in text."""


# Link, Edit and Plan are made for every link of every message: as named tuples, which
# are as immutable as frozen dataclasses and built five times faster (bench/rewrite.py).
class Link(NamedTuple):
    """A link to track: where it points and where it is written."""

    link_index: int
    url: str
    """The destination: entities decoded, surrounding whitespace trimmed."""
    tags: Mapping[str, tuple[str, ...]]
    element: str
    """The element's name, lowercased: `a`, `area` or a VML element such as
    `v:roundrect`; `text` for a URL in a text/plain part."""
    start: int
    end: int
    """`doc[start:end]` is the URL as written (in HTML, the `href` value without its
    quotes)."""
    quoted: bool
    """Whether an `href` value is in quotes (False for a URL in text)."""
    original: str
    """The URL as written, kept when click tracking is off."""


class Slot(enum.Enum):
    """What fills a slot that is not a link."""

    PIXEL = "pixel"
    UNSUBSCRIBE = "unsubscribe"


class Edit(NamedTuple):
    """One change: `doc[start:end]` becomes what `slot` stands for (a link's tracking
    URL, the pixel, the unsubscribe URL), or nothing when `slot` is None (a removed
    `ses:*` attribute)."""

    start: int
    end: int
    slot: Link | Slot | None = None


def pixel_html(url: str) -> str:
    """The open-tracking image, as SES writes it."""
    return f'<img alt="" src="{escape(url)}" style="display: none; width: 1px; height: 1px;">'


def placeholders(doc: str, start: int = 0, end: int | None = None) -> list[Edit]:
    """An unsubscribe slot for every `{{amazonSESUnsubscribeUrl}}` in `doc[start:end]`."""
    end = len(doc) if end is None else end
    found = []
    size = len(UNSUBSCRIBE_PLACEHOLDER)
    at = doc.find(UNSUBSCRIBE_PLACEHOLDER, start, end)
    while at >= 0:
        found.append(Edit(at, at + size, Slot.UNSUBSCRIBE))
        at = doc.find(UNSUBSCRIBE_PLACEHOLDER, at + size, end)
    return found


class Plan(NamedTuple):
    """Text cut at the places tracking changes, ready to render per recipient."""

    pieces: tuple[str, ...]
    """The unchanged text between the slots: one more piece than there are slots."""
    slots: tuple[Link | Slot, ...]
    """What goes between pieces."""
    plain: bool = False
    """Plain text: URLs are written as they are, where HTML escapes them."""

    def render(
        self,
        *,
        open_url: str | None,
        click_url: Callable[[Link], str] | None,
        unsubscribe_url: str | None = None,
    ) -> str:
        """The text with tracking for one recipient. With `click_url` None, links keep
        their original value; with `open_url` None, there is no pixel; with
        `unsubscribe_url` None, the placeholder stays as written."""
        pieces = self.pieces
        write: Callable[[str], str] = str if self.plain else escape
        out = [pieces[0]]
        for number, slot in enumerate(self.slots, 1):
            if slot is Slot.PIXEL:
                if open_url is not None:
                    out.append(pixel_html(open_url))
            elif slot is Slot.UNSUBSCRIBE:
                out.append(
                    UNSUBSCRIBE_PLACEHOLDER if unsubscribe_url is None else write(unsubscribe_url)
                )
            elif click_url is None:
                out.append(slot.original)
            elif slot.quoted or self.plain:
                out.append(write(click_url(slot)))
            else:
                out.append(f'"{escape(click_url(slot))}"')
            out.append(pieces[number])
        return "".join(out)


def plan(
    doc: str,
    changes: Sequence[Edit],
    start: int = 0,
    end: int | None = None,
    *,
    plain: bool = False,
) -> Plan:
    """Cut `doc[start:end]` at the `changes` inside it (none may cross its bounds);
    `plain` for a text/plain document."""
    end = len(doc) if end is None else end
    pieces: list[str] = []
    slots: list[Link | Slot] = []
    piece = ""  # the text kept since the last slot (removed attributes leave gaps in it)
    pos = start
    for edit in changes:
        if edit.start < start or edit.end > end:
            continue
        piece += doc[pos : edit.start]
        pos = edit.end
        if edit.slot is None:
            continue  # a removed attribute: its text is simply left out
        pieces.append(piece)
        piece = ""
        slots.append(edit.slot)
    pieces.append(piece + doc[pos:end])
    return Plan(pieces=tuple(pieces), slots=tuple(slots), plain=plain)
