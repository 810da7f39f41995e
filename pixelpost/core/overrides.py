"""Per-message tracking controls: headers a mailer sets on one message to override its
configuration set, pixelpost's own and those of the services applications move from.

    X-Track-Opens: yes|no            the pixel
    X-Track-Clicks: yes|no           links (in text parts too when the set tracks them)
    X-Unsubscribe: yes|no            the List-Unsubscribe fields and unsubscribe URL
    X-Mailgun-Track: yes|no          opens and clicks (Mailgun; also true|false)
    X-Mailgun-Track-Opens: yes|no    (Mailgun)
    X-Mailgun-Track-Clicks: yes|no|htmlonly   (Mailgun)
    X-PM-TrackOpens: true|false      (Postmark)
    X-PM-TrackLinks: None|HtmlAndText|HtmlOnly|TextOnly   (Postmark)

Values are read without regard to case. Mailgun's X-Mailgun-Track sets both and its
own specific headers override it; otherwise two headers that say different things
about the same setting (or one header given twice with different values) refuse the
message, naming them, so that nothing is half-applied. The relay removes every one of
these headers before the message goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from pixelpost.errors import PixelpostError

_YES_NO = {"yes": True, "no": False}
_MAILGUN = {"yes": True, "no": False, "true": True, "false": False}
_POSTMARK_OPENS = {"true": True, "false": False}
_SETTINGS = ("open", "html_links", "text_links", "unsubscribe")

# Per header: its values and what each sets, as (setting, value) pairs. A link setting
# left out keeps the configuration set's (X-Track-Clicks: yes tracks text links only
# where the set does).
_Effect = tuple[tuple[str, bool], ...]


def _switch(values: dict[str, bool], *settings: str) -> dict[str, _Effect]:
    return {text: tuple((s, on) for s in settings) for text, on in values.items()}


def _clicks(values: dict[str, bool]) -> dict[str, _Effect]:
    return {
        text: (("html_links", True),) if on else (("html_links", False), ("text_links", False))
        for text, on in values.items()
    }


_SPECIFIC: dict[str, dict[str, _Effect]] = {
    "x-track-opens": _switch(_YES_NO, "open"),
    "x-track-clicks": _clicks(_YES_NO),
    "x-unsubscribe": _switch(_YES_NO, "unsubscribe"),
    "x-mailgun-track-opens": _switch(_MAILGUN, "open"),
    "x-mailgun-track-clicks": {
        **_clicks(_MAILGUN),
        "htmlonly": (("html_links", True), ("text_links", False)),
    },
    "x-pm-trackopens": _switch(_POSTMARK_OPENS, "open"),
    "x-pm-tracklinks": {
        "none": (("html_links", False), ("text_links", False)),
        "htmlandtext": (("html_links", True), ("text_links", True)),
        "htmlonly": (("html_links", True), ("text_links", False)),
        "textonly": (("html_links", False), ("text_links", True)),
    },
}
_GENERAL: dict[str, dict[str, _Effect]] = {
    "x-mailgun-track": {
        text: (("open", on), *_clicks({text: on})[text]) for text, on in _MAILGUN.items()
    },
}
_SPELLED = {
    "x-pm-tracklinks": "None, HtmlAndText, HtmlOnly or TextOnly",
    "x-pm-trackopens": "true or false",
    "x-mailgun-track-clicks": "yes, no or htmlonly",
}
OVERRIDE_HEADERS = frozenset(_SPECIFIC) | frozenset(_GENERAL)
"""The headers read here, lowercased."""


class BadOverride(PixelpostError):
    """A control header's value is not one it takes, or two contradict each other; the
    message names the header."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Overrides:
    """What a message's control headers ask for; None keeps the set's setting."""

    open: bool | None = None
    html_links: bool | None = None
    text_links: bool | None = None
    unsubscribe: bool | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in _SETTINGS)


NONE = Overrides()


def _effect(table: dict[str, _Effect], name: str, shown: str, value: str) -> _Effect:
    effect = table.get(value.strip().lower())
    if effect is None:
        expected = _SPELLED.get(name, "yes or no")
        raise BadOverride(f'{shown}: "{value.strip()[:64]}" is not {expected}')
    return effect


def read_overrides(fields: Iterable[tuple[str, str]]) -> Overrides:
    """The overrides that `fields` (each header's name as written and its value) ask
    for; BadOverride naming the header whose value is wrong, or the two that
    contradict each other."""
    general: dict[str, tuple[bool, str]] = {}
    specific: dict[str, tuple[bool, str]] = {}
    for shown, value in fields:
        name = shown.lower()
        if name in _GENERAL:
            into, effect = general, _effect(_GENERAL[name], name, shown, value)
        elif name in _SPECIFIC:
            into, effect = specific, _effect(_SPECIFIC[name], name, shown, value)
        else:
            continue
        for setting, on in effect:
            earlier = into.get(setting)
            if earlier is not None and earlier[0] != on:
                raise BadOverride(
                    f"{earlier[1]} and {shown} contradict each other"
                    if earlier[1].lower() != name
                    else f"{shown} is given twice with different values"
                )
            into[setting] = (on, shown)
    chosen = {setting: on for setting, (on, _) in {**general, **specific}.items()}
    return replace(NONE, **chosen) if chosen else NONE
