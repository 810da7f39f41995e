"""The HTML rewrite: which links are tracked, and that nothing else changes."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Comment
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpost.core import mime
from pixelpost.core.html import (
    Link,
    edits,
    parse_link_tags,
    pixel_html,
    plan,
    scan,
    unescape_attribute,
)
from tests import html5
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
    # "<!--[endif]>" starts an ordinary comment, not the end of a conditional
    doc = '<!--[endif]> <a href="https://example.com/hidden"> --><p>x</p></body>'
    assert tracked(doc) == []
    assert rewrite(doc, links=False).endswith(f"{pixel_html(OPEN_URL)}</body>")


@pytest.mark.parametrize(
    "unclosed",
    [
        "<title>",
        "<style>",
        "<script>",
        "<td valign='top",
        '<v:roundrect href="https://example.com/mso',
        "<!-- never closed",
        "<plaintext>",
        "</p",
    ],
)
def test_what_a_conditional_comment_leaves_open_ends_with_it(unclosed: str) -> None:
    """A browser's comment ends at the first "-->" whatever Outlook's markup inside it
    left open: the links after it are tracked and the pixel stays out of the comment."""
    doc = (
        f'<html><body><!--[if mso]><v:rect href="https://example.com/mso">{unclosed}'
        '<![endif]--><a href="https://example.com/after">x</a></body></html>'
    )
    links = tracked(doc)
    assert links == html5.links(doc)
    assert links[-1] == "https://example.com/after"
    rewritten = rewrite(doc, links=False)
    assert rewritten.endswith(f"{pixel_html(OPEN_URL)}</body></html>")
    assert html5.images(rewritten) == [OPEN_URL]


def test_a_comment_inside_a_conditional_ends_it_for_browsers() -> None:
    """What follows a comment nested in a conditional one is markup to every reader."""
    doc = (
        '<!--[if mso]><v:rect href="https://example.com/mso"><!-- note -->'
        '<a href="https://example.com/both">x</a><![endif]--></body>'
    )
    assert tracked(doc) == ["https://example.com/mso", "https://example.com/both"]
    assert rewrite(doc, links=False).endswith(f"{pixel_html(OPEN_URL)}</body>")
    # a conditional that never ends is a comment that takes the rest of the document
    doc = '<p>x</p><!--[if mso]><a href="https://example.com/never">x</a></body>'
    assert tracked(doc) == html5.links(doc) == []
    assert html5.images(rewrite(doc, links=False)) == [OPEN_URL]


# --- read as the WHATWG tokenizer reads it --------------------------------------------

MAILCHIMP_STRAY_QUOTE = (
    '<html><body><table><tr><td valign="top" "><a href="https://a.example/1">x</a></td>'
    '<td>…</td></tr></table><a href="https://a.example/2">y</a></body></html>'
)


def test_a_quote_outside_a_value_is_part_of_a_name_and_the_tag_still_ends() -> None:
    assert tracked(MAILCHIMP_STRAY_QUOTE) == ["https://a.example/1", "https://a.example/2"]
    assert rewrite(MAILCHIMP_STRAY_QUOTE, links=False).endswith(
        f"{pixel_html(OPEN_URL)}</body></html>"
    )
    for tag in ('<td "x>', "<td a'b>", '<td ="x>', '<td b="1"="x>', "<td a=b'c>", '<td x=">'):
        doc = f'{tag}<a href="https://e.example/">x</a>'
        assert tracked(doc) == html5.links(doc), tag
    # a quote right after "=" opens a value, which holds the ">" and the link
    assert tracked('<td a=">"><a href="https://e.example/">x</a>') == ["https://e.example/"]
    assert tracked('<td a= "><a href="https://e.example/">x</a>') == []


@pytest.mark.parametrize(
    "doc",
    [
        "<!-- a --!><a href=https://e.example/>",
        "<!--><a href=https://e.example/>",
        "<!---><a href=https://e.example/>",
        "<!----><a href=https://e.example/>",
        "<!-- <!-- nested --><a href=https://e.example/>",
        "<![CDATA[ x ]> <a href=https://e.example/>",
        "<!x y><a href=https://e.example/>",
        "<?php x ?><a href=https://e.example/>",
        "</ 3><a href=https://e.example/>",
        "</><a href=https://e.example/>",
        "<script><!--<script></script>--></script><a href=https://e.example/>",
        "<style></styles></style ><a href=https://e.example/>",
    ],
)
def test_comments_and_text_end_where_a_browser_ends_them(doc: str) -> None:
    assert tracked(doc) == html5.links(doc) == ["https://e.example/"]


@pytest.mark.parametrize(
    "doc",
    [
        "<xmp><a href=https://e.example/></xmp>",
        "<iframe><a href=https://e.example/></iframe>",
        "<noembed><a href=https://e.example/></noembed>",
        "<noframes><a href=https://e.example/></noframes>",
        "<plaintext><a href=https://e.example/></plaintext>",
        "<textarea><a href=https://e.example/></textarea>",
        "<script><!--<script></script><a href=https://e.example/>--></script>",
        "</ 3 <a href=https://e.example/>",
        "<!-- a --!-- <a href=https://e.example/>",
    ],
)
def test_what_a_browser_shows_as_text_is_not_rewritten(doc: str) -> None:
    assert tracked(doc) == html5.links(doc) == []


@pytest.mark.parametrize(
    ("doc", "pixel_before"),
    [
        ("<p>x</p></html>", "</html>"),
        ("<p>x</p></body><p>y</p></html>", "</body>"),
        ("<p>x</p><plaintext>text", "<plaintext>"),
        ('<p>x</p><td valign="top', '<td valign="top'),
        ('<p>x</p><a href="https://e.example/', '<a href="https://e.example/'),
        ("<p>x</p><!-- never closed", "<!-- never closed"),
        ("<p>x</p><title>never closed", "<title>never closed"),
        ("<p>x</p><script><!--<script></script>", "<script><!--<script></script>"),
    ],
)
def test_the_pixel_goes_where_a_browser_loads_it(doc: str, pixel_before: str) -> None:
    """Before the last </body>, else the last </html>, else before whatever takes the
    rest of the document (a tag or comment that never ends, PLAINTEXT)."""
    rewritten = rewrite(doc, links=False)
    assert rewritten.endswith(pixel_html(OPEN_URL) + doc[doc.rindex(pixel_before) :])
    assert html5.images(rewritten) == [OPEN_URL]


@pytest.mark.parametrize(
    ("href", "url"),
    [
        ("https://e.example/a\u00a0b", "https://e.example/a%C2%A0b"),
        ("https://e.example/?q=1\u200b", "https://e.example/?q=1%E2%80%8B"),
        ("https://e.ex\u00adample/pa\u00adge", "https://e.example/pa%C2%ADge"),
        ("https://e.example/#\u00a0", "https://e.example/#%C2%A0"),
        ("http:/e.example/a", "http://e.example/a"),
        ("http:\\\\e.example\\a\\b?c=\\d", "http://e.example/a/b?c=\\d"),
        ("HTTPS:///e.example/", "HTTPS://e.example/"),
        ("https:e.example", "https://e.example"),
        ("\x01 https://e.example/\x1f", "https://e.example/"),
        ("https://bücher.example/straße", "https://bücher.example/straße"),
        # the tokenizer reads NUL as U+FFFD, which is not trimmed like a control
        ("https://e.example/a\x00", "https://e.example/a\ufffd"),
    ],
)
def test_links_a_browser_fixes_are_tracked_to_where_it_goes(href: str, url: str) -> None:
    assert tracked(f'<a href="{href}">x</a>') == [url]


@pytest.mark.parametrize(
    "href",
    [
        "https://e.ex\u00a0ample/",
        "https:",
        "https:///",
        "https:?x",
        "javascript:x",
        "\x00https://e.example/",
    ],
)
def test_links_a_browser_cannot_follow_are_left_alone(href: str) -> None:
    assert tracked(f'<a href="{href}">x</a>') == []


def test_entities_decode_as_in_an_attribute() -> None:
    assert unescape_attribute("a&amp;b") == "a&b"
    assert unescape_attribute("&lt;&#60;&#x3c;&#X3C") == "<<<<"
    assert unescape_attribute("x&copy=1") == "x&copy=1"
    assert unescape_attribute("x&copy;=1") == "x©=1"
    assert unescape_attribute("x&copy 1") == "x© 1"
    assert unescape_attribute("&nosuch;") == "&nosuch;"
    assert unescape_attribute("&#0;&#x110000;&#128;") == "\ufffd\ufffd€"
    assert unescape_attribute("&#0000000000065;&#x00000000041") == "AA"
    # past the last code point, however long: U+FFFD (int() refuses 4,300 digits)
    assert unescape_attribute("&#" + "9" * 5_000 + ";&#x" + "f" * 5_000) == "\ufffd\ufffd"
    doc = '<a href="https://e.example/&#' + "1" * 5_000 + '">x</a>'
    assert tracked(doc) == ["https://e.example/\ufffd"]  # (html5lib's int() refuses it)


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
    # Outlook markers that never close their condition: each must not read on to the
    # end of the document (that was quadratic: 1.7 s for 20,000 of them).
    doc = "<!--[if x -->" * 200_000 + '<a href="https://e.com/">'
    assert tracked(doc) == ["https://e.com/"]
    assert tracked("<![if x >" * 200_000 + '<a href="https://e.com/">') == ["https://e.com/"]
    # a long run of dashes in escaped script: "-->" is looked for once per run, not at
    # every dash (that was quadratic: 84 s for 500,000 of them)
    for script in ("<script><!--x", "<script><!--<script>x"):
        doc = script + "-" * 500_000 + '</script>--></script><a href="https://e.com/">'
        assert tracked(doc) == ["https://e.com/"]


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


@pytest.mark.parametrize("path", OWN_TEMPLATES, ids=lambda path: path.name)
def test_own_templates_differential_and_byte_preserving(path: Path) -> None:
    """The project's templates: tables, Outlook's conditional comments and VML button,
    an image map, comments, style and script holding link-like text, every quoting."""
    for doc in (path.read_text("utf-8"), html5.filled(path.read_text("utf-8"))):
        ours = links_on_a_and_area(doc)
        assert ours, path.name
        assert sorted(ours) == sorted(soup_links(doc)), path.name
        assert_like_a_browser(doc)
        assert all("&amp;" not in url for url in ours)
        assert_byte_preserving(doc)


def test_own_templates_track_what_they_should() -> None:
    doc = html5.filled((FIXTURES / "html" / "welcome.html").read_text("utf-8"))
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
        assert_like_a_browser(doc)
        assert_byte_preserving(doc)


def test_corpus_templates_with_every_link_made_absolute(corpus: Path) -> None:
    """The Postmark templates hold {{placeholders}} in most hrefs: fill them in, so that
    the differential sees real links in real layouts."""
    for path in html_corpus(corpus):
        doc = html5.filled(path.read_text("utf-8"))
        ours = links_on_a_and_area(doc)
        assert sorted(ours) == sorted(soup_links(doc)), path.name
        assert_like_a_browser(doc)
        assert all("&amp;" not in url for url in ours)
        assert_byte_preserving(doc)


def html_bodies(paths: list[Path]) -> list[tuple[str, str]]:
    """The HTML parts tracking would rewrite in these messages, as text, each with its
    message's name (parts whose body or charset cannot be decoded are left out: tracking
    leaves them alone too)."""
    bodies = []
    for path in paths:
        data = path.read_bytes()
        for entity in mime.html_parts(mime.parse(data)):
            try:
                octets = mime.decode_body(
                    data[entity.body_start : entity.end], entity.transfer_encoding
                )
                bodies.append((path.name, octets.decode(entity.charset or "utf-8")))
            except (mime.TransferEncodingError, LookupError, UnicodeError):
                continue
    return bodies


def assert_html_parts_like_a_browser(paths: list[Path]) -> None:
    bodies = html_bodies(paths)
    assert len(bodies) >= 5
    for name, doc in bodies:
        try:
            assert_like_a_browser(doc)
        except AssertionError as exc:
            raise AssertionError(name) from exc


def test_html_parts_of_own_messages_are_read_as_a_browser_reads_them() -> None:
    assert_html_parts_like_a_browser(sorted((FIXTURES / "mime").glob("*.eml")))


def test_html_parts_of_corpus_messages_are_read_as_a_browser_reads_them(corpus: Path) -> None:
    assert_html_parts_like_a_browser(sorted((corpus / "mime").glob("*.eml")))


# --- generated documents, against a conformant tokenizer -------------------------------

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


# What real mail gets wrong inside a tag: a quote or "=" where no value starts, values
# run together, a slash, a value holding quotes or ">".
_stray = st.sampled_from(
    ['"', "'", '" ', "=", '="x"', "a=b'c", 'b="1"="2"', "/", "x=>", 'c="a>b"', "d='<a href=x>'"]
)


@st.composite
def _tag(draw: st.DrawFn, element: str, attributes: list[str]) -> str:
    attributes = list(attributes)
    if draw(st.integers(0, 3)) == 0:
        attributes.insert(draw(st.integers(0, len(attributes))), draw(_stray))
    separator = draw(st.sampled_from([" ", "\n  ", "\t", "/"]))
    return f"<{element}{separator}{separator.join(attributes)}>"


@st.composite
def _link(draw: st.DrawFn) -> str:
    element = draw(st.sampled_from(["a", "A", "area", "AREA", "v:roundrect"]))
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
    return draw(_tag(element, attributes)) + f"{draw(_words)}</{element}>"


_leaves = st.one_of(
    _words,
    _link(),
    _tag("td", ['valign="top"']),
    st.sampled_from(
        [
            "<br>",
            "<p>",
            "</p>",
            "<img src=x.png>",
            "&amp;",
            "&lt;a href=https://example.com/e&gt;",
            "<!DOCTYPE html>",
            "</>",
            "</ 3>",
            "<?xml?>",
            "<!x>",
            "<3",
            "a < b",
            "</p foo='>'>",
            "<noscript>",
        ]
    ),
)
_flat = st.lists(_leaves, min_size=1, max_size=4).map("".join)
# What takes the rest of the document: the pixel must go before it.
_endings = st.sampled_from(
    [
        "",
        "<plaintext><a href=https://example.com/p>",
        "<!-- never ends <a href=https://example.com/c>",
        "<title>never ends <a href=https://example.com/t>",
        '<a href="https://example.com/never-ends>',
        "<td valign='top",
        "<script><!--<script></script>",
        "</p",
    ]
)


# Where text or a comment ends, by every rule the tokenizer has; Outlook's conditional
# comments hold only leaves (a comment inside one would end it early for everyone but
# Outlook, which no two readers agree on).
_opaque = st.one_of(
    _flat.map(lambda s: f"<!-- {s} -->"),
    _flat.map(lambda s: f"<!-- {s} --!>"),
    _flat.map(lambda s: f"<!-->{s}"),
    _flat.map(lambda s: f"<!--->{s}"),
    _flat.map(lambda s: f"<!---->{s}"),
    _flat.map(lambda s: f"<!--[if mso]>{s}<![endif]-->"),
    # what Outlook's markup leaves open ends with the comment
    st.tuples(_flat, _endings).map(lambda p: f"<!--[if mso]>{p[0]}{p[1]}<![endif]-->"),
    _flat.map(lambda s: f"<![CDATA[{s}]]>"),
    _flat.map(lambda s: f"<script>var x = '{s}';</script>"),
    _flat.map(lambda s: f"<script><!-- {s} --></script>"),
    _flat.map(lambda s: f"<script><!--<script>{s}</script>{s}--></script>"),
    _flat.map(lambda s: f"<script><!--{s}</script>"),
    _flat.map(lambda s: f"<STYLE>/* {s} */</STYLE>"),
    *(
        _flat.map(lambda s, name=name: f"<{name}>{s}</{name.upper()}>")
        for name in ("title", "textarea", "xmp", "iframe", "noembed", "noframes")
    ),
)
_fragments = st.recursive(
    st.one_of(_leaves, _opaque),
    lambda inner: st.lists(inner, max_size=4).map(
        lambda parts: f'<td class="c" data-x="&gt;">{"".join(parts)}</td>'
    ),
    max_leaves=8,
)


def assert_like_a_browser(doc: str) -> None:
    """The links pixelpost tracks are the ones a browser finds (and Outlook, inside its
    conditional comments); the pixel is an image a browser loads, before the last
    </body> when there is one."""
    assert [link.url for link in scan(doc).links] == html5.links(doc)
    rewritten = rewrite(doc, links=False)
    assert html5.images(rewritten).count(OPEN_URL) == 1
    body_end = rewritten.lower().rfind("</body>")
    probe = rewritten[:body_end] + "<img src=probe>"
    if body_end >= 0 and html5.images(probe).count("probe") == 1:  # a </body> in markup
        assert rewritten[:body_end].endswith(pixel_html(OPEN_URL))


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(_fragments, max_size=12),
    body_end=st.booleans(),
    ending=_endings,
)
def test_generated_html_is_read_as_a_browser_reads_it(
    parts: list[str], body_end: bool, ending: str
) -> None:
    doc = "<html><body>" + "".join(parts) + ("</body></html>" if body_end else "") + ending
    assert_like_a_browser(doc)
    assert_byte_preserving(doc)


# What html.parser reads unlike the standard: CDATA and bogus comments, the abrupt and
# "--!>" comment endings, the text-only elements it does not know, stray quotes, "=" and
# "/" in tags, and escaped script.
_SOUP_READS_OTHERWISE = re.compile(
    r"""<!\[CDATA|<!--->|<!-->|--!>|<(?:xmp|iframe|noembed|noframes)|</>|</ |<!x|<\?"""
    r"""|["'=/]>|" |<script><!--""",
    re.IGNORECASE,
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_fragments, max_size=12))
def test_generated_html_beautifulsoup_agrees_where_it_can(parts: list[str]) -> None:
    """BeautifulSoup's html.parser is no tokenizer of the standard's, but on documents
    without the constructs it reads otherwise it must agree too."""
    doc = "<html><body>" + "".join(parts) + "</body></html>"
    if _SOUP_READS_OTHERWISE.search(doc):
        return
    assert sorted(links_on_a_and_area(doc)) == sorted(soup_links(doc))
