"""The unsubscribe pages without a server: Accept-Language, the templates' checks, the
built-in pages themselves, and what a POST's body may ask for."""

from __future__ import annotations

import contextlib
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixelpost.errors import ConfigError
from tracker.pages import SPECS, accepted_languages, builtin_templates, check_template, load_pages
from tracker.unsubscribe import Ask, BadForm, UnsupportedType, read_form

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        ("de-CH", ["de-ch", "de"]),
        ("de-CH,de;q=0.9,en;q=0.8", ["de-ch", "de", "en"]),
        ("en;q=0.5, fr, de;q=0.7", ["fr", "de", "en"]),
        ("zh-Hant-TW, en", ["zh-hant-tw", "zh-hant", "zh", "en"]),
        ("fr;q=0, *;q=0.5, it", ["it"]),
        ("en;q=1.5, de;q=-1, nl;q=x, pt", ["pt"]),
        ("en; Q=0.2, sv", ["sv", "en"]),
        ("<script>, ../../etc, en_US, e n", []),
    ],
)
def test_accept_language_orders_by_quality_and_falls_back_to_the_shorter_tag(
    header: str | None, expected: list[str]
) -> None:
    assert accepted_languages(header) == expected


@given(st.text(max_size=300))
def test_any_accept_language_reads_as_tags(header: str) -> None:
    for tag in accepted_languages(header):
        assert re.fullmatch(r"[a-z]{1,8}(-[a-z0-9]{1,8})*", tag)


def test_a_template_is_checked_for_its_placeholders() -> None:
    page = check_template("unsubscribe.html", "<p>$address: $list, $$5</p>", "x.html")
    assert page.substitute(address="a", list="b") == "<p>a: b, $5</p>"
    with pytest.raises(ConfigError) as raised:
        check_template("unsubscribe.html", "<p>${address} $price</p>", "x.html")
    assert raised.value.problems == (
        "x.html: unknown placeholder $price (this template knows $address, $config_set, $list)",
        "x.html: the placeholder $list is missing",
    )
    with pytest.raises(ConfigError, match=r"x.html: a \$ that starts no placeholder"):
        check_template("unavailable.html", "<p>costs $5</p>", "x.html")
    with pytest.raises(
        ConfigError, match=r"unknown placeholder \$address \(this template knows \$config_set\)"
    ):
        check_template("list_account.html", "$address", "x.html")


class _Reader(HTMLParser):
    """What an accessibility check and the CSP care about in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.button_text = ""
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_button = self._in_button or tag == "button"

    def handle_endtag(self, tag: str) -> None:
        self._in_button = self._in_button and tag != "button"

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self.button_text += data


@pytest.mark.parametrize("name", sorted(n for n in SPECS if not n.startswith("list_")))
def test_the_built_in_pages_are_plain_accessible_and_self_contained(name: str) -> None:
    pages = load_pages(None)
    html = pages.render(
        name, accept_language=None, address="a@example.org", config_set="news", account=False
    ).html
    reader = _Reader()
    reader.feed(html)
    tags = {tag for tag, _ in reader.tags}
    assert html.startswith("<!DOCTYPE html>\n")
    assert ("html", {"lang": "en"}) in reader.tags
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in (
        reader.tags
    )
    assert {"main", "h1", "title"} <= tags
    assert not tags & {"script", "img", "link", "iframe", "object"}
    assert not re.search(r"\b(src|href)=|url\(|@import|https?:", html)
    forms = [attrs for tag, attrs in reader.tags if tag == "form"]
    if name in ("unsubscribe.html", "unsubscribed.html", "resubscribed.html"):
        assert forms == [{"method": "post", "aria-labelledby": "title"}]
        assert reader.button_text.strip() in ("Unsubscribe", "Subscribe again")
    else:
        assert forms == []


def test_every_built_in_template_is_there_and_checks() -> None:
    assert set(builtin_templates()) == set(SPECS)


@pytest.mark.parametrize(
    ("content_type", "body", "asked"),
    [
        (FORM, b"List-Unsubscribe=One-Click", Ask.ONE_CLICK),
        (f"{FORM}; charset=UTF-8", b"list-unsubscribe=one-click", Ask.ONE_CLICK),
        (None, b"List-Unsubscribe=One-Click", Ask.ONE_CLICK),
        (FORM, b"action=unsubscribe", Ask.UNSUBSCRIBE),
        (FORM, b"action=resubscribe&action=resubscribe", Ask.RESUBSCRIBE),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--b--\r\n",
            Ask.ONE_CLICK,
        ),
    ],
)
def test_what_a_post_asks_for(content_type: str | None, body: bytes, asked: Ask) -> None:
    assert read_form(content_type, body) is asked


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        (FORM, b"", "neither List-Unsubscribe=One-Click"),
        (FORM, b"List-Unsubscribe=", "List-Unsubscribe is '', not One-Click"),
        (FORM, b"action=unsubscribe&action=resubscribe", "asks for action=resubscribe and"),
        (FORM, "action=ünsubscribe".encode(), "not percent-encoded UTF-8"),
        (FORM, b"action=%FF", "not percent-encoded UTF-8"),
        (FORM, b"&".join([b"a=1"] * 30), "more than 20 fields"),
        ("multipart/form-data", b"", "without a boundary"),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Type: text/plain\r\n\r\nOne-Click\r\n--b--\r\n",
            "no name",
        ),
        ("application/json", b'{"List-Unsubscribe": "One-Click"}', "Content-Type"),
    ],
)
def test_a_body_that_asks_for_nothing_it_can_says_why(
    content_type: str, body: bytes, why: str
) -> None:
    with pytest.raises(BadForm, match=re.escape(why)):
        read_form(content_type, body)


def test_a_body_of_another_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedType):
        read_form("text/plain", b"List-Unsubscribe=One-Click")


@given(st.sampled_from([FORM, "multipart/form-data; boundary=x", None]), st.binary(max_size=300))
def test_any_body_is_an_ask_or_bad_form(content_type: str | None, body: bytes) -> None:
    with contextlib.suppress(BadForm):
        assert isinstance(read_form(content_type, body), Ask)
