"""URLs in plain text: which a mail client links, held to linkify-it-py on the project's
own texts and the corpus, found in linear time."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from linkify_it import LinkifyIt

from pixelpost.core import mime
from pixelpost.core.rewrite import RewriteFailure, plan_message
from pixelpost.core.splice import UNSUBSCRIBE_PLACEHOLDER, Link, Slot
from pixelpost.core.text import MAX_URL, edits, scan
from tests.conftest import FIXTURES

TEXTS = sorted((FIXTURES / "text").glob("*.txt"))


def found(doc: str, *, flowed: bool = False, delsp: bool = False) -> list[str]:
    """The URLs of `doc` as written."""
    return [doc[link.start : link.end] for link in scan(doc, flowed=flowed, delsp=delsp).links]


# --- what is a URL --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("see https://example.com/a now", ["https://example.com/a"]),
        (
            "HTTP://EXAMPLE.COM/UP and Https://e.example",
            ["HTTP://EXAMPLE.COM/UP", "Https://e.example"],
        ),
        (
            "https://example.com/a\r\nhttps://example.com/b",
            ["https://example.com/a", "https://example.com/b"],
        ),
        ("end of a sentence: https://example.com/x.", ["https://example.com/x"]),
        (
            "list: https://e.example/a, https://e.example/b; done",
            ["https://e.example/a", "https://e.example/b"],
        ),
        ("wow https://e.example/x!?'", ["https://e.example/x"]),
        ("(https://e.example/in-parens)", ["https://e.example/in-parens"]),
        (
            "https://en.wikipedia.org/wiki/Fish_(food))",
            ["https://en.wikipedia.org/wiki/Fish_(food)"],
        ),
        ("[https://e.example/sq]", ["https://e.example/sq"]),
        ("https://e.example/list[0].", ["https://e.example/list[0]"]),
        ('"https://e.example/q"', ["https://e.example/q"]),
        ("<https://e.example/a.>", ["https://e.example/a."]),  # brackets delimit it
        ("<URL:https://e.example/old!>", ["https://e.example/old!"]),
        ("<https://e.example/a>b", ["https://e.example/a"]),
        ("a<https://e.example/x>, b", ["https://e.example/x"]),
        ("https://e.example/a<b", ["https://e.example/a"]),
        ("x:https://e.example/colon", ["https://e.example/colon"]),
        (
            "https://e.example/?next=https://f.example/",
            ["https://e.example/?next=https://f.example/"],
        ),
        ("https://bücher.example/ü?q=é", ["https://bücher.example/ü?q=é"]),
        ("https://e.example/a\u00a0b", ["https://e.example/a"]),  # a no-break space ends it
        ("https://e.example/a\u3000b", ["https://e.example/a"]),
        ("https://e.example/a\u2028b", ["https://e.example/a"]),
        ("https://e.example/a\x85b", ["https://e.example/a"]),  # a C1 control
        ("https://e.example/a\uff5cb", ["https://e.example/a"]),  # linkify-it's separator
        ("https://e.example/\u3002next", ["https://e.example/\u3002next"]),  # CJK full stop
        ("https://user:pw@e.example:8443/p", ["https://user:pw@e.example:8443/p"]),
        ("http://192.0.2.1/", ["http://192.0.2.1/"]),
    ],
)
def test_urls_as_a_mail_client_links_them(doc: str, expected: list[str]) -> None:
    assert found(doc) == expected


@pytest.mark.parametrize(
    "doc",
    [
        "no links here",
        "ftp://example.com/file mailto:a@example.com www.example.com",
        "xhttps://example.com/ 9http://example.com/ _https://example.com/",
        "https:// alone, http://?q, http://.example, https://-x.example, http:///path",
        "http:/one-slash.example https:example.com",
        "https://\x01host.example/",
    ],
)
def test_what_is_not_a_url(doc: str) -> None:
    assert found(doc) == []


def test_a_url_over_2048_characters_is_left_alone() -> None:
    base = "https://e.example/"
    longest = base + "a" * (MAX_URL - len(base))
    assert found(f"{longest} {longest}b.") == [longest]
    assert found(f"({longest}b)") == []


def test_the_found_are_numbered_from_first_index_up_to_the_limit() -> None:
    doc = " ".join(f"https://e.example/{n}" for n in range(5))
    links = scan(doc, first_index=7, limit=3).links
    assert [(link.link_index, link.url) for link in links] == [
        (7, "https://e.example/0"),
        (8, "https://e.example/1"),
        (9, "https://e.example/2"),
    ]
    assert scan(doc, limit=0).links == ()
    assert all(link.element == "text" and link.tags == {} for link in links)


def test_a_url_with_the_unsubscribe_placeholder_in_it_is_no_link() -> None:
    doc = f"https://e.example/u/{UNSUBSCRIBE_PLACEHOLDER} and https://e.example/ok"
    found_ = scan(doc, unsubscribe=True)
    assert [link.url for link in found_.links] == ["https://e.example/ok"]
    assert [(edit.start, edit.slot) for edit in edits(found_)] == [
        (20, Slot.UNSUBSCRIBE),
        (doc.index("https://e.example/ok"), found_.links[0]),
    ]
    # Without `unsubscribe`, the placeholder is text like any other.
    assert found(doc) == [f"https://e.example/u/{UNSUBSCRIBE_PLACEHOLDER}", "https://e.example/ok"]


# --- charsets: a latin-1 stand-in for the part's bytes --------------------------------


def stand_in(doc: str, charset: str) -> str:
    return doc.encode(charset).decode("latin-1")


@pytest.mark.parametrize(
    ("charset", "word", "space"),
    [
        ("utf-8", "café", "\u00a0"),
        ("iso-8859-1", "café", "\u00a0"),
        ("windows-1252", "€uro", "\u00a0"),
        ("shift_jis", "日本語", "\u3000"),  # its second bytes may be "]" or "\\"
        ("gb18030", "中文", "\u3000"),
        ("euc-kr", "한국어", "\u3000"),
    ],
)
def test_a_stand_in_is_read_as_its_charset(charset: str, word: str, space: str) -> None:
    doc = (
        f"{word} https://e.example/{word}?q=1{space}{word} (https://e.example/x{word}) "
        "https://e.example/ok"
    )
    held = stand_in(doc, charset)
    links = scan(held, codec=codecs.lookup(charset).name).links
    assert [link.url for link in links] == [
        f"https://e.example/{word}?q=1",
        f"https://e.example/x{word}",
        "https://e.example/ok",
    ]
    # The spans are the stand-in's: the bytes of each URL as written.
    for link in links:
        assert held[link.start : link.end] == stand_in(link.url, charset) == link.original


def test_a_mislabelled_stand_in_is_read_as_utf8_and_bytes_of_no_charset_are_left_alone() -> None:
    doc = stand_in("https://e.example/café https://e.example/x", "utf-8")
    assert [link.url for link in scan(doc, codec="ascii").links] == [
        "https://e.example/café",
        "https://e.example/x",
    ]
    broken = "https://e.example/\xff\xfe https://e.example/fine"
    assert [link.url for link in scan(broken, codec="utf-8").links] == ["https://e.example/fine"]


def test_a_stand_in_and_its_text_have_the_same_urls() -> None:
    for path in TEXTS:
        doc = path.read_text("utf-8")
        as_text = scan(doc).links
        as_bytes = scan(stand_in(doc, "utf-8"), codec="utf-8").links
        assert [link.url for link in as_bytes] == [link.url for link in as_text], path.name
        assert [stand_in(link.original, "utf-8") for link in as_text] == [
            link.original for link in as_bytes
        ]


# --- format=flowed --------------------------------------------------------------------


def test_delsp_no_reads_each_line_as_it_is() -> None:
    doc = "Read https://e.example/a \r\nand https://e.example/b \r\nhttps://e.example/c\r\n"
    assert found(doc, flowed=True) == [
        "https://e.example/a",
        "https://e.example/b",
        "https://e.example/c",
    ]


def test_delsp_yes_joins_lines_and_leaves_a_split_url_untracked() -> None:
    doc = (
        "A long one https://e.example/very/long/pa \r\n"  # soft break inside the URL
        "th?q=1 and a short one https://e.example/s  \r\n"  # a space of its own, then one
        " next: https://e.example/t\r\n"  # space-stuffed
        "> quoted https://e.example/q \r\n"
        ">> deeper\r\n"  # a change of depth ends the paragraph: the URL above is whole
        "-- \r\n"  # the signature separator is no soft break
        "https://e.example/sig\r\n"
    )
    assert found(doc, flowed=True, delsp=True) == [
        "https://e.example/s",
        "https://e.example/t",
        "https://e.example/q",
        "https://e.example/sig",
    ]
    # With delsp=no the same text has a space at each soft break: nothing is split.
    assert found(doc, flowed=True)[:2] == ["https://e.example/very/long/pa", "https://e.example/s"]


def test_delsp_yes_a_url_ending_at_a_soft_break_before_punctuation_is_whole() -> None:
    doc = "See https://e.example/page \r\n. And https://e.example/x \r\nhttps://e.example/y\r\n"
    # "…/page" + "." joins to "…/page." (the dot is trailing punctuation); "…/x" and
    # "https://…/y" join into one URL, which runs over a soft break.
    assert found(doc, flowed=True, delsp=True) == ["https://e.example/page"]


def test_delsp_yes_a_url_after_a_word_it_joins_is_no_url() -> None:
    doc = "word \r\nhttps://e.example/a\r\nsee: \r\nhttps://e.example/b\r\n"
    assert found(doc, flowed=True, delsp=True) == ["https://e.example/b"]


# --- linear time ----------------------------------------------------------------------


def best_time(run: Callable[[], object]) -> float:
    times = []
    for _ in range(2):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize(
    ("unit", "how", "each"),
    [
        ("see https://e.example/path?q=1 and ", "text", True),  # many URLs on one line
        ("https://e.example/a\u00a0", "utf-8", True),  # cut by no-break spaces, one run
        ("https://e.example/a\u00a0", "text", True),
        ("<https://e.example/a", "text", True),
        ("http://", "text", False),  # one run of schemes without a host
        ("xhttps://e.example/", "text", False),
        ("https://e.example/(((", "text", False),  # one run, too long
        ("https://e.example/a)))", "text", False),
        ("https://e.example/a \r\n", "delsp", False),  # all one paragraph, joined
        ("https://e.example/a \r\n", "flowed", True),
    ],
)
def test_finding_urls_takes_linear_time(unit: str, how: str, each: bool) -> None:
    def scan_of(size: int) -> Callable[[], tuple[Link, ...]]:
        doc = unit * (size // len(unit))
        if how == "utf-8":
            held = stand_in(doc, "utf-8")
            return lambda: scan(held, codec="utf-8").links
        return lambda: scan(doc, flowed=how in ("flowed", "delsp"), delsp=how == "delsp").links

    small, large = scan_of(75_000), scan_of(300_000)
    links = large()
    assert len(links) == ((300_000 // len(unit)) if each else 0)
    # Four times the text, four times the time (quadratic would be sixteen); the slack
    # is for a noisy machine and for times too short to measure.
    small_time, large_time = best_time(small), best_time(large)
    assert large_time < 10 * small_time + 0.05, (small_time, large_time)


def test_a_single_line_body_of_4_6_mb_plans_in_well_under_a_second() -> None:
    prose = "The quick brown fox reads the newsletter again, and again. " * 400
    unit = prose + "https://shop.example.com/item?id=42&utm_source=news "
    line = (unit * (4_600_000 // len(unit) + 1))[:4_600_000]
    data = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line.encode() + b"\r\n"
    started = time.perf_counter()
    plan = plan_message(data, links=False, pixel=False, text_links=True)
    elapsed = time.perf_counter() - started
    assert len(plan.links) == line.count("https://")
    assert elapsed < 0.5, f"{elapsed:.3f} s"  # 10-30 ms


# --- the same URLs as linkify-it ------------------------------------------------------

LINKIFY = LinkifyIt()

KNOWN_DIFFERENCES: dict[tuple[str, str | None, str | None], str] = {
    (
        "parentheses.txt",
        "https://example.com/a_(b",
        "https://example.com/a_",
    ): "an opening parenthesis without its partner is part of the path as written (RFC "
    "3986 allows it, and a browser goes there); only a closing one can belong to the text",
    (
        "punctuation.txt",
        "https://example.com/ask?q=1",
        "https://example.com/ask?q=1?",
    ): "'?!' ends the sentence: every trailing '?' and '!' goes, where linkify-it keeps a "
    "'?' that a '!' follows",
    (
        "punctuation.txt",
        "https://example.com/docs",
        "https://example.com/docs:",
    ): "a colon before a space ends a clause: GitHub's autolinks drop it, linkify-it keeps "
    "it after a path (not after a bare host)",
}
"""Where pixelpost and linkify-it-py disagree on the project's own texts, and why:
(text, pixelpost's URL, linkify-it's URL)."""


def linkify_urls(doc: str) -> dict[int, str]:
    """linkify-it's http(s) links with an explicit `://`, by where they start. It also
    finds `www.` hosts without a scheme, e-mail addresses and other schemes, which
    pixelpost leaves alone."""
    return {
        match.index: match.text
        for match in LINKIFY.match(doc) or []
        if match.schema.lower() in ("http:", "https:")
    }


def differences(name: str, doc: str) -> set[tuple[str, str | None, str | None]]:
    ours = {link.start: doc[link.start : link.end] for link in scan(doc).links}
    theirs = linkify_urls(doc)
    return {
        (name, ours.get(at), theirs.get(at))
        for at in sorted(ours.keys() | theirs.keys())
        if ours.get(at) != theirs.get(at)
    }


def test_own_texts_have_the_urls_linkify_it_finds() -> None:
    assert len(TEXTS) >= 7
    seen: set[tuple[str, str | None, str | None]] = set()
    total = 0
    for path in TEXTS:
        doc = path.read_text("utf-8")
        total += len(scan(doc).links)
        seen |= differences(path.name, doc)
    assert seen == KNOWN_DIFFERENCES.keys()
    assert total >= 70


def corpus_text_parts(corpus: Path) -> list[tuple[str, bytes, str]]:
    """Every text/plain body of the corpus messages that decodes: (message, its bytes,
    the body as text)."""
    bodies = []
    for path in sorted((corpus / "mime").glob("*.eml")):
        data = path.read_bytes()
        for entity in mime.text_parts(mime.parse(data)):
            try:
                octets = mime.decode_body(
                    data[entity.body_start : entity.end], entity.transfer_encoding
                )
                doc = octets.decode(entity.charset or "ascii", "replace")
            except (mime.TransferEncodingError, LookupError):
                continue
            bodies.append((path.name, data, doc))
    return bodies


def test_corpus_texts_have_the_urls_linkify_it_finds(corpus: Path) -> None:
    bodies = corpus_text_parts(corpus)
    assert len(bodies) >= 100
    for name, _, doc in bodies:
        assert differences(name, doc) == set(), name


def test_corpus_messages_track_the_urls_of_their_text_parts(corpus: Path) -> None:
    """The whole rewrite finds in each message the URLs its decoded text parts hold."""
    expected: dict[str, list[str]] = {}
    for name, _, doc in corpus_text_parts(corpus):
        expected.setdefault(name, []).extend(link.url for link in scan(doc).links)
    tracked = 0
    for path in sorted((corpus / "mime").glob("*.eml")):
        try:
            plan = plan_message(path.read_bytes(), links=False, pixel=False, text_links=True)
        except RewriteFailure:
            continue
        assert [link.url for link in plan.links] == expected.get(path.name, []), path.name
        tracked += len(plan.links)
    assert tracked >= 1
