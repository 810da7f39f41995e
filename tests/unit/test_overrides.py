"""Per-message tracking controls: each header's values, precedence and refusals."""

from __future__ import annotations

import pytest

from pixelpost.core.overrides import OVERRIDE_HEADERS, BadOverride, Overrides, read_overrides


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([("X-Track-Opens", "no")], Overrides(open=False)),
        ([("X-Track-Opens", " YES ")], Overrides(open=True)),
        ([("X-Track-Clicks", "yes")], Overrides(html_links=True)),  # text links: the set's
        ([("X-Track-Clicks", "no")], Overrides(html_links=False, text_links=False)),
        ([("X-Unsubscribe", "no")], Overrides(unsubscribe=False)),
        ([("X-Mailgun-Track", "no")], Overrides(open=False, html_links=False, text_links=False)),
        ([("X-Mailgun-Track", "true")], Overrides(open=True, html_links=True)),
        ([("X-Mailgun-Track-Opens", "false")], Overrides(open=False)),
        ([("X-Mailgun-Track-Clicks", "htmlonly")], Overrides(html_links=True, text_links=False)),
        ([("X-PM-TrackOpens", "false")], Overrides(open=False)),
        ([("X-PM-TrackLinks", "None")], Overrides(html_links=False, text_links=False)),
        ([("X-PM-TrackLinks", "HtmlAndText")], Overrides(html_links=True, text_links=True)),
        ([("X-PM-TrackLinks", "HtmlOnly")], Overrides(html_links=True, text_links=False)),
        ([("X-PM-TrackLinks", "textonly")], Overrides(html_links=False, text_links=True)),
        # Mailgun's general switch gives way to its specific ones.
        (
            [("X-Mailgun-Track", "no"), ("X-Mailgun-Track-Opens", "yes")],
            Overrides(open=True, html_links=False, text_links=False),
        ),
        # One header twice with the same value, and headers that agree, are fine.
        ([("X-Track-Opens", "no"), ("x-track-opens", "No")], Overrides(open=False)),
        ([("X-Track-Opens", "no"), ("X-PM-TrackOpens", "false")], Overrides(open=False)),
        ([("Subject", "hello")], Overrides()),
    ],
)
def test_each_header_sets_what_it_says(fields: list[tuple[str, str]], expected: Overrides) -> None:
    assert read_overrides(fields) == expected


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ([("X-Track-Opens", "maybe")], 'X-Track-Opens: "maybe" is not yes or no'),
        ([("X-Track-Clicks", "")], 'X-Track-Clicks: "" is not yes or no'),
        ([("X-PM-TrackOpens", "yes")], 'X-PM-TrackOpens: "yes" is not true or false'),
        ([("X-PM-TrackLinks", "all")], 'X-PM-TrackLinks: "all" is not None, HtmlAndText'),
        ([("X-Mailgun-Track-Clicks", "textonly")], "is not yes, no or htmlonly"),
        (
            [("X-Track-Opens", "yes"), ("X-PM-TrackOpens", "false")],
            "X-Track-Opens and X-PM-TrackOpens contradict each other",
        ),
        (
            [("X-Track-Clicks", "yes"), ("X-Track-Clicks", "no")],
            "X-Track-Clicks is given twice with different values",
        ),
        (
            [("X-PM-TrackLinks", "TextOnly"), ("X-Mailgun-Track-Clicks", "htmlonly")],
            "X-PM-TrackLinks and X-Mailgun-Track-Clicks contradict each other",
        ),
    ],
)
def test_bad_values_and_contradictions_are_refused_by_name(
    fields: list[tuple[str, str]], named: str
) -> None:
    with pytest.raises(BadOverride, match="^.*" + named.replace("(", r"\(")):
        read_overrides(fields)


def test_every_header_the_docs_name_is_read() -> None:
    assert {
        "x-track-opens",
        "x-track-clicks",
        "x-unsubscribe",
        "x-mailgun-track",
        "x-mailgun-track-opens",
        "x-mailgun-track-clicks",
        "x-pm-trackopens",
        "x-pm-tracklinks",
    } == OVERRIDE_HEADERS
