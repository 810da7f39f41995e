"""SES's `{{amazonSESUnsubscribeUrl}}`: filled with each recipient's unsubscribe URL in
HTML and text parts, never sent through the click redirect, left alone unless asked."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest

from pixelpost.core.html import edits, plan, scan
from pixelpost.core.rewrite import MessagePlan, plan_message
from pixelpost.core.splice import UNSUBSCRIBE_PLACEHOLDER, Link, pixel_html

PLACEHOLDER = UNSUBSCRIBE_PLACEHOLDER
OPEN_URL = "https://t.example/o/OPEN"
UNSUBSCRIBE_URL = "https://t.example/u/TOKEN?a=1&b=2"


def click_url(link: Link) -> str:
    return f"https://t.example/c/L{link.link_index}"


def render(message: MessagePlan, unsubscribe_url: str | None = UNSUBSCRIBE_URL) -> bytes:
    return message.render(open_url=OPEN_URL, click_url=click_url, unsubscribe_url=unsubscribe_url)


def message(text: str | None, html: str | None) -> bytes:
    out = EmailMessage()
    out["From"] = "news@example.com"
    out["To"] = "reader@example.org"
    out["Subject"] = "Unsubscribe"
    if text is not None:
        out.set_content(text, cte="8bit")
    if html is not None:
        if text is None:
            out.set_content(html, subtype="html", cte="8bit")
        else:
            out.add_alternative(html, subtype="html", cte="8bit")
    return out.as_bytes(policy=policy.SMTP)


def bodies(data: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(data, policy=policy.default)
    return {
        part.get_content_subtype(): str(part.get_content()).replace("\r\n", "\n")
        for part in parsed.walk()
        if part.get_content_maintype() == "text"
    }


def test_an_unsubscribe_href_is_the_unsubscribe_url_never_a_tracked_link() -> None:
    html = (
        '<p><a href="https://example.com/shop">shop</a> '
        f'<a href="{PLACEHOLDER}">Unsubscribe</a> '
        f"<a href='https://example.com/prefs?u={PLACEHOLDER}'>Preferences</a> "
        f"<v:roundrect href={PLACEHOLDER}></v:roundrect></p></body>"
    )
    data = message(None, html)
    tracked = plan_message(data, links=True, pixel=True, unsubscribe=True)

    assert [link.url for link in tracked.links] == ["https://example.com/shop"]
    assert bodies(render(tracked))["html"] == (
        '<p><a href="https://t.example/c/L0">shop</a> '
        '<a href="https://t.example/u/TOKEN?a=1&amp;b=2">Unsubscribe</a> '
        "<a href='https://example.com/prefs?u=https://t.example/u/TOKEN?a=1&amp;b=2'>"
        "Preferences</a> "
        "<v:roundrect href=https://t.example/u/TOKEN?a=1&amp;b=2></v:roundrect></p>"
        f"{pixel_html(OPEN_URL)}</body>\n"
    )


def test_placeholders_anywhere_in_html_and_text_are_filled() -> None:
    text = f"Hello,\nhttps://example.com/a & {PLACEHOLDER} on one line.\nBye: {PLACEHOLDER}\n"
    html = (
        f"<!-- {PLACEHOLDER} --><p>Copy this: {PLACEHOLDER}</p>"
        f'<a href="https://example.com/a">a</a><a href="{PLACEHOLDER}">u</a></body>'
    )
    data = message(text, html)
    tracked = plan_message(data, links=True, pixel=False, text_links=True, unsubscribe=True)
    assert [(link.link_index, link.element) for link in tracked.links] == [(0, "a"), (1, "text")]
    filled = bodies(render(tracked))
    assert filled["plain"] == (
        "Hello,\nhttps://t.example/c/L1 & https://t.example/u/TOKEN?a=1&b=2 on one line.\n"
        "Bye: https://t.example/u/TOKEN?a=1&b=2\n"
    )
    escaped = "https://t.example/u/TOKEN?a=1&amp;b=2"
    assert filled["html"] == (
        f"<!-- {escaped} --><p>Copy this: {escaped}</p>"
        f'<a href="https://t.example/c/L0">a</a><a href="{escaped}">u</a></body>\n'
    )


def test_without_an_unsubscribe_url_the_placeholder_stays_as_written() -> None:
    data = message(f"Unsubscribe: {PLACEHOLDER}\n", f'<a href="{PLACEHOLDER}">u</a>')
    tracked = plan_message(data, links=False, pixel=False, text_links=True, unsubscribe=True)
    assert tracked.changes
    assert render(tracked, unsubscribe_url=None) == data


def test_placeholders_change_nothing_unless_asked_for() -> None:
    html = (
        f'<a href="https://example.com/prefs?u={PLACEHOLDER}">p</a>'
        f'<a href="{PLACEHOLDER}">u</a>{PLACEHOLDER}</body>'
    )
    data = message(f"Unsubscribe: {PLACEHOLDER}\n", html)
    assert not plan_message(data, links=False, pixel=False, text_links=True).changes
    assert not plan_message(data, links=False, pixel=False).changes
    # Today's rewrite, to the byte: the URL holding the placeholder is a link like any.
    tracked = plan_message(data, links=True, pixel=True)
    assert [link.url for link in tracked.links] == [f"https://example.com/prefs?u={PLACEHOLDER}"]
    assert render(tracked) == render(tracked, unsubscribe_url=None)
    doc = html
    assert plan(doc, edits(scan(doc), links=True, pixel=True)).render(
        open_url=OPEN_URL, click_url=click_url
    ) == (
        f'<a href="https://t.example/c/L0">p</a><a href="{PLACEHOLDER}">u</a>{PLACEHOLDER}'
        f"{pixel_html(OPEN_URL)}</body>"
    )


@pytest.mark.parametrize(
    ("text", "html", "changes"),
    [
        (f"Unsubscribe: {PLACEHOLDER}\n", None, True),
        (None, f"<p>{PLACEHOLDER}</p>", True),
        ("No placeholder here.\n", '<a href="https://example.com/" ses:no-track>x</a>', False),
    ],
)
def test_a_placeholder_is_a_change_of_its_own(
    text: str | None, html: str | None, changes: bool
) -> None:
    data = message(text, html)
    tracked = plan_message(data, links=False, pixel=False, unsubscribe=True)
    assert tracked.changes is changes
    assert tracked.links == ()
    if not changes:  # the ses:* attributes stay when nothing is tracked
        assert render(tracked) == data


def test_a_placeholder_inside_a_removed_ses_attribute_goes_with_it() -> None:
    doc = f'<a ses:tags="u:{PLACEHOLDER}" href="https://example.com/">x</a>{PLACEHOLDER}'
    found = scan(doc, unsubscribe=True)
    assert len(found.unsubscribes) == 2
    rendered = plan(doc, edits(found, links=True, pixel=False, unsubscribe=True)).render(
        open_url=None, click_url=click_url, unsubscribe_url=UNSUBSCRIBE_URL
    )
    assert rendered == (
        '<a href="https://t.example/c/L0">x</a>https://t.example/u/TOKEN?a=1&amp;b=2'
    )
