"""The HTML rewrite: which links are tracked, and that nothing else changes."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Comment
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpost.core.html import (
    Link,
    edits,
    parse_link_tags,
    pixel_html,
    plan,
    scan,
    unescape_attribute,
)
from tests.conftest import FIXTURES

BASE = "https://t.example"
OPEN_URL = f"{BASE}/o/OPENTOKEN"


def click_url(link: Link) -> str:
    return f"{BASE}/c/L{link.link_index}/{link.url.split('://', 1)[1]}"


def rewrite(doc: str, *, links: bool = True, pixel: bool = True) -> str:
    return plan(doc, edits(scan(doc), links=links, pixel=pixel)).render(
        open_url=OPEN_URL if pixel else None, click_url=click_url if links else None
    )


def tracked(doc: str) -> list[str]:
    return [link.url for link in scan(doc).links]


# --- what is a link -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ('<a href="https://example.com/a">x</a>', ["https://example.com/a"]),
        ("<A HREF='http://example.com/b'>x</A>", ["http://example.com/b"]),
        ("<a href=https://example.com/c?d=1>x</a>", ["https://example.com/c?d=1"]),
        (
            '<a\n  class="btn"\n  href="https://example.com/split"\n>x</a>',
            ["https://example.com/split"],
        ),
        ('<a title="a > b" href="https://example.com/gt">x</a>', ["https://example.com/gt"]),
        (
            '<map><area shape="rect" href="https://example.com/area"></map>',
            ["https://example.com/area"],
        ),
        (
            '<v:roundrect href="https://example.com/vml" arcsize="10%">',
            ["https://example.com/vml"],
        ),
        ('<a href=" \n https://example.com/trim \t">x</a>', ["https://example.com/trim"]),
        (
            '<a href="https://example.com/?a=1&amp;b=2&#38;c=3&#x26;d">x</a>',
            ["https://example.com/?a=1&b=2&c=3&d"],
        ),
        (
            '<a href="https://example.com/?a=1&copy=2&not;x">x</a>',
            ["https://example.com/?a=1&copy=2¬x"],
        ),
        ('<a href="https://exa\nmple.com/">x</a>', ["https://example.com/"]),
        (
            '<a href="https://example.com/1" href="https://example.com/2">x</a>',
            ["https://example.com/1"],
        ),
    ],
)
def test_links_that_are_tracked(doc: str, expected: list[str]) -> None:
    assert tracked(doc) == expected


@pytest.mark.parametrize(
    "doc",
    [
        '<a href="mailto:a@example.com">x</a>',
        '<a href="tel:+123">x</a>',
        '<a href="#top">x</a>',
        '<a href="/relative">x</a>',
        '<a href="//example.com/protocol-relative">x</a>',
        '<a href="ftp://example.com/">x</a>',
        '<a href="{{action_url}}">x</a>',
        '<a href="https://">x</a>',
        "<a>no href</a>",
        '<link href="https://example.com/style.css">',
        '<img src="https://example.com/i.png">',
        '<!-- <a href="https://example.com/commented">x</a> -->',
        "<script>var s = '<a href=\"https://example.com/script\">';</script>",
        '<style>/* <a href="https://example.com/style"> */</style>',
        '<title><a href="https://example.com/title"></title>',
        '<![CDATA[<a href="https://example.com/cdata">]]>',
        "<img alt=\"<a href='https://example.com/in-attribute'>\">",
        '<a ses:no-track href="https://example.com/no-track">x</a>',
        '<a href="https://example.com/no-track" SES:NO-TRACK>x</a>',
    ],
)
def test_what_is_not_a_tracked_link(doc: str) -> None:
    assert tracked(doc) == []


def test_outlook_conditional_comments_are_markup() -> None:
    doc = (
        '<!--[if mso]><v:roundrect href="https://example.com/mso"><![endif]-->'
        '<!--[if !mso]><!--><a href="https://example.com/not-mso">x</a><!--<![endif]-->'
        '<![if !vml]><a href="https://example.com/revealed">y</a><![endif]>'
        '<!-- plain <a href="https://example.com/hidden"> -->'
    )
    assert tracked(doc) == [
        "https://example.com/mso",
        "https://example.com/not-mso",
        "https://example.com/revealed",
    ]
    assert [link.element for link in scan(doc).links] == ["v:roundrect", "a", "a"]


def test_entities_decode_as_in_an_attribute() -> None:
    assert unescape_attribute("a&amp;b") == "a&b"
    assert unescape_attribute("&lt;&#60;&#x3c;&#X3C") == "<<<<"
    assert unescape_attribute("x&copy=1") == "x&copy=1"
    assert unescape_attribute("x&copy;=1") == "x©=1"
    assert unescape_attribute("x&copy 1") == "x© 1"
    assert unescape_attribute("&nosuch;") == "&nosuch;"
    assert unescape_attribute("&#0;&#x110000;&#128;") == "\ufffd\ufffd€"


def test_link_tags() -> None:
    assert parse_link_tags("product:book;genre:fiction;") == {
        "product": ("book",),
        "genre": ("fiction",),
    }
    assert parse_link_tags(" a : 1 ; a:2;bad;x:y z;:v") == {"a": ("1", "2")}
    [link] = scan(
        '<a ses:tags="campaign:spring;slot:hero" href="https://example.com/">x</a>'
    ).links
    assert link.tags == {"campaign": ("spring",), "slot": ("hero",)}


# --- what the rewrite writes -----------------------------------------------------------


def test_rewrite_replaces_only_the_href_values_and_adds_the_pixel() -> None:
    doc = (
        "<html><body>\n"
        '<a class=x href="https://example.com/?a=1&amp;b=2">one</a>\n'
        "<a href='http://example.com/two'>two</a>\n"
        "<a href=https://example.com/three>three</a>\n"
        "</body></html>"
    )
    assert rewrite(doc) == (
        "<html><body>\n"
        '<a class=x href="https://t.example/c/L0/example.com/?a=1&amp;b=2">one</a>\n'
        "<a href='https://t.example/c/L1/example.com/two'>two</a>\n"
        '<a href="https://t.example/c/L2/example.com/three">three</a>\n'
        f"{pixel_html(OPEN_URL)}</body></html>"
    )


def test_ses_attributes_are_removed_even_where_nothing_is_tracked() -> None:
    doc = (
        '<a  ses:no-track href="https://a.example/"\n ses:tags="k:v">x</a>'
        "<a ses:tags='k:v'>y</a>"
    )
    assert rewrite(doc, links=False, pixel=True) == (
        '<a href="https://a.example/">x</a><a>y</a>' + pixel_html(OPEN_URL)
    )


def test_every_ses_attribute_goes_and_the_first_of_each_counts() -> None:
    doc = '<a ses:tags="a:b" href="https://e.example/" SES:TAGS="c:d" ses:tags>x</a>'
    [link] = scan(doc).links
    assert link.tags == {"a": ("b",)}
    assert rewrite(doc, pixel=False) == '<a href="https://t.example/c/L0/e.example/">x</a>'
    doc = '<a ses:no-track href="https://e.example/" ses:no-track=1>x</a>'
    assert rewrite(doc, pixel=False) == '<a href="https://e.example/">x</a>'


def test_pixel_goes_before_the_last_body_end_tag_or_at_the_end() -> None:
    assert rewrite("<p>a</p></BODY >\n</html>", links=False) == (
        f"<p>a</p>{pixel_html(OPEN_URL)}</BODY >\n</html>"
    )
    assert (
        rewrite("<p>no body end</p>", links=False) == f"<p>no body end</p>{pixel_html(OPEN_URL)}"
    )
    assert rewrite("<!-- </body> --><p>x</p>", links=False).endswith(pixel_html(OPEN_URL))
    assert rewrite("<p>{{ses:openTracker}}</p></body>", links=False) == (
        f"<p>{pixel_html(OPEN_URL)}</p></body>"
    )


def test_click_tracking_off_keeps_links() -> None:
    doc = '<a href="https://example.com/">x</a></body>'
    assert (
        rewrite(doc, links=False)
        == f'<a href="https://example.com/">x</a>{pixel_html(OPEN_URL)}</body>'
    )
    assert (
        rewrite(doc, pixel=False) == '<a href="https://t.example/c/L0/example.com/">x</a></body>'
    )


def test_an_unterminated_tag_does_not_take_exponential_time() -> None:
    # As in browsers, the <a ...> is part of the unterminated <div ...> tag.
    doc = "<div " + "a " * 50_000 + '<a href="https://example.com/">'
    assert tracked(doc) == soup_links(doc) == []
    assert tracked('<div title="never closed ' + "x" * 50_000 + '<a href="https://e.com/">') == []
    assert tracked('<a href="https://e.com/"' + " x" * 50_000) == []


# --- byte preservation and the differential against BeautifulSoup ----------------------

_SES_ATTRIBUTE = re.compile(
    r"""[\t\n\f\r ]*ses:(?:no-track|tags)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?""",
    re.IGNORECASE,
)


def assert_byte_preserving(doc: str) -> None:
    """Put each original href value back where its tracking URL is, drop the pixel: the
    result is the original, but for the removed ses:* attributes."""
    found = scan(doc)
    rewritten = rewrite(doc)
    restored = rewritten.replace(pixel_html(OPEN_URL), "", 1)
    for link in found.links:
        written = html.escape(click_url(link))
        if not link.quoted:
            written = f'"{written}"'
        at = restored.index(written)
        restored = restored[:at] + doc[link.start : link.end] + restored[at + len(written) :]
    assert "https://t.example/c/" not in restored
    expected = doc
    for start, end in sorted(found.removals, reverse=True):
        assert _SES_ATTRIBUTE.fullmatch(doc[start:end]), doc[start:end]
        expected = expected[:start] + expected[end:]
    assert restored == expected
    assert rewritten.count(pixel_html(OPEN_URL)) == 1


def soup_links(doc: str) -> list[str]:
    """http(s) hrefs of a and area as BeautifulSoup finds them, inside Outlook's
    conditional comments too (which it reads as comments)."""
    soup = BeautifulSoup(doc, "html.parser")
    found = []
    for tag in soup.find_all(["a", "area"]):
        href = tag.get("href")
        if isinstance(href, str) and not tag.has_attr("ses:no-track"):
            url = re.sub(r"[\t\n\r]", "", href.strip("\t\n\f\r "))
            if re.match(r"https?://.", url, re.IGNORECASE):
                found.append(url)
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        conditional = re.match(r"\[if[^\]]*\]>(.*)<!\[endif\]$", comment, re.DOTALL)
        if conditional:
            found += soup_links(conditional[1])
    return found


def links_on_a_and_area(doc: str) -> list[str]:
    return [link.url for link in scan(doc).links if link.element in ("a", "area")]


OWN_TEMPLATES = sorted((FIXTURES / "html").glob("*.html"))


def filled(doc: str) -> str:
    """A template's {{placeholders}} filled with real links (most of its hrefs)."""
    doc = re.sub(r"\{\{\s*(\w+)\s*\}\}", r"https://example.com/\1?a=1&amp;b=2", doc)
    return doc.replace('href="#"', 'href="https://example.com/#top"')


@pytest.mark.parametrize("path", OWN_TEMPLATES, ids=lambda path: path.name)
def test_own_templates_differential_and_byte_preserving(path: Path) -> None:
    """The project's templates: tables, Outlook's conditional comments and VML button,
    an image map, comments, style and script holding link-like text, every quoting."""
    for doc in (path.read_text("utf-8"), filled(path.read_text("utf-8"))):
        ours = links_on_a_and_area(doc)
        assert ours, path.name
        assert sorted(ours) == sorted(soup_links(doc)), path.name
        assert all("&amp;" not in url for url in ours)
        assert_byte_preserving(doc)


def test_own_templates_track_what_they_should() -> None:
    doc = filled((FIXTURES / "html" / "welcome.html").read_text("utf-8"))
    found = scan(doc).links
    assert [link.element for link in found].count("v:roundrect") == 1
    urls = [link.url for link in found]
    assert "https://example.com/area/start" in urls
    assert "https://example.com/guide?step=1&lang=en" in urls
    for left_alone in (
        "/old",
        "/script",
        "/unsubscribe",
        "mailto:",
        "tel:",
        "#top",
        "javascript:",
    ):
        assert not any(left_alone in url for url in urls), left_alone
    assert len(OWN_TEMPLATES) >= 2  # the parametrized test above ran on them


def html_corpus(corpus: Path) -> list[Path]:
    files = sorted((corpus / "html").glob("*.html"))
    assert len(files) >= 36
    return files


def test_corpus_templates_differential_and_byte_preserving(corpus: Path) -> None:
    for path in html_corpus(corpus):
        doc = path.read_text("utf-8")
        assert sorted(links_on_a_and_area(doc)) == sorted(soup_links(doc)), path.name
        assert_byte_preserving(doc)


def test_corpus_templates_with_every_link_made_absolute(corpus: Path) -> None:
    """The Postmark templates hold {{placeholders}} in most hrefs: fill them in, so that
    the differential sees real links in real layouts."""
    for path in html_corpus(corpus):
        doc = filled(path.read_text("utf-8"))
        ours = links_on_a_and_area(doc)
        assert sorted(ours) == sorted(soup_links(doc)), path.name
        assert all("&amp;" not in url for url in ours)
        assert_byte_preserving(doc)


# --- generated documents ----------------------------------------------------------------

_words = st.text(
    st.characters(codec="utf-8", exclude_characters="<&\r", exclude_categories=("Cs",)),
    max_size=12,
)
_urls = st.builds(
    lambda scheme, path: f"{scheme}://example.com/{path}",
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.text(st.sampled_from("abc/?=._-~%20"), max_size=12),
) | st.sampled_from(["mailto:a@example.com", "#top", "/relative", "{{url}}", "tel:1"])


@st.composite
def _attribute(draw: st.DrawFn, name: str, value: str) -> str:
    style = draw(st.sampled_from(["double", "single", "bare", "spaced", "newline"]))
    if style == "single" or (style == "double" and '"' in value):
        return f"{name}='{value}'" if "'" not in value else f'{name}="{value}"'
    if style == "bare" and not set(value) & set(" \t\n>\"'=`"):
        return f"{name}={value}"
    if style == "spaced":
        return f'{name} = "{value}"'
    if style == "newline":
        return f'{name}\n="{value}"'
    return f'{name}="{value}"'


@st.composite
def _link(draw: st.DrawFn) -> str:
    element = draw(st.sampled_from(["a", "A", "area", "AREA"]))
    attributes = [draw(_attribute(draw(st.sampled_from(["href", "HREF", "Href"])), draw(_urls)))]
    if draw(st.booleans()):
        attributes.insert(
            draw(st.integers(0, 1)),
            draw(_attribute("title", draw(st.sampled_from(["a > b", "x", "<b>", "it's"])))),
        )
    if draw(st.integers(0, 4)) == 0:
        attributes.append("ses:no-track")
    if draw(st.integers(0, 3)) == 0:
        attributes.append(draw(_attribute("ses:tags", "k:v;campaign:spring")))
    separator = draw(st.sampled_from([" ", "\n  ", "\t"]))
    return f"<{element}{separator}{separator.join(attributes)}>{draw(_words)}</{element}>"


_leaves = st.one_of(
    _words,
    _link(),
    st.sampled_from(["<br>", "<p>", "</p>", "<img src=x.png>", "&amp;", "<!DOCTYPE html>"]),
)
# Comment-like wrappers hold only leaves: a comment inside a comment ends the outer one
# at its own "-->", which no renderer and no parser agree on.
_flat = st.lists(_leaves, min_size=1, max_size=4).map("".join)
_opaque = st.one_of(
    _flat.map(lambda s: f"<!-- {s} -->"),
    _flat.map(lambda s: f"<!--[if mso]>{s}<![endif]-->"),
    _flat.map(lambda s: f"<script>var x = '{s}';</script>"),
    _flat.map(lambda s: f"<STYLE>/* {s} */</STYLE>"),
    _flat.map(lambda s: f"<![CDATA[{s}]]>"),
)
_fragments = st.recursive(
    st.one_of(_leaves, _opaque),
    lambda inner: st.lists(inner, max_size=4).map(
        lambda parts: f'<td class="c" data-x="&gt;">{"".join(parts)}</td>'
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_fragments, max_size=12), body_end=st.booleans())
def test_generated_html_differential_and_byte_preserving(parts: list[str], body_end: bool) -> None:
    doc = "<html><body>" + "".join(parts) + ("</body></html>" if body_end else "")
    assert sorted(links_on_a_and_area(doc)) == sorted(soup_links(doc))
    assert_byte_preserving(doc)
