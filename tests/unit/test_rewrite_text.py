"""Links in text/plain parts, through the whole-message rewrite: numbered after the HTML
links, every other line and byte kept, format=flowed respected."""

from __future__ import annotations

import base64
import binascii
import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpost.core import mime
from pixelpost.core.rewrite import MAX_TRACKED_LINKS, MessagePlan, RewriteFailure, plan_message
from pixelpost.core.splice import Link
from tests.conftest import FIXTURES

OPEN_URL = "https://t.example/o/OPEN"


def click_url(link: Link) -> str:
    """A tracking URL with characters that HTML escapes and text must not."""
    return f"https://t.example/c/L{link.link_index}?a=1&b=2"


def render(plan: MessagePlan) -> bytes:
    return plan.render(open_url=OPEN_URL, click_url=click_url)


def as_written(plan: MessagePlan) -> bytes:
    """The copy with every link, the pixel and the placeholders as they were written."""
    return plan.render(open_url=None, click_url=lambda link: link.original)


NEWSLETTER = (FIXTURES / "text" / "newsletter.txt").read_text("utf-8")
HTML = (
    '<p>Hello <a href="https://example.com/one">one</a> '
    '<a href="https://example.com/two">two</a></p></body>'
)


def alternative(text: str, html: str = HTML, *, cte: str = "quoted-printable") -> bytes:
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "reader@example.org"
    message["Subject"] = "Newsletter"
    message.set_content(text, cte=cte)
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message.as_bytes(policy=policy.SMTP)


def bodies(data: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    text, markup = (str(part.get_content()).replace("\r\n", "\n") for part in (plain, html))
    return text, markup


def test_text_links_are_numbered_on_from_the_html_links() -> None:
    data = alternative(NEWSLETTER)
    plan = plan_message(data, links=True, pixel=True, text_links=True)

    assert [(link.link_index, link.element) for link in plan.links[:3]] == [
        (0, "a"),
        (1, "a"),
        (2, "text"),
    ]
    assert [link.link_index for link in plan.links] == list(range(len(plan.links)))
    urls = [link.url for link in plan.links[2:]]
    assert urls[0] == (
        "https://news.roaster.example/issues/42"
        "?utm_source=newsletter&utm_medium=email&utm_campaign=issue-42"
    )
    assert "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s" in urls
    text, html = bodies(render(plan))
    # In text, the tracking URL as it is: no escaping, no quotes.
    assert "https://t.example/c/L2?a=1&b=2" in text
    assert "&amp;" not in text
    assert text.count("https://t.example/c/") == len(urls)
    assert "news.roaster.example" not in text
    # The HTML part is rendered as it would be without text links.
    without = plan_message(data, links=True, pixel=True)
    assert bodies(render(without))[1] == html
    assert bodies(render(without))[0] == NEWSLETTER


def test_text_links_are_off_unless_asked_for_and_apart_from_html_links() -> None:
    data = alternative(NEWSLETTER)
    assert bodies(render(plan_message(data, links=True, pixel=True)))[0] == NEWSLETTER
    text_only = plan_message(data, links=False, pixel=False, text_links=True)
    assert text_only.links[0].link_index == 0  # no HTML link is tracked to count on from
    assert all(link.element == "text" for link in text_only.links)
    text, html = bodies(render(text_only))
    assert html == HTML + "\n"
    assert "https://t.example/c/L0?a=1&b=2" in text


def test_a_text_part_without_urls_is_left_out_of_the_plan() -> None:
    data = alternative("Nothing to track here.\n", "<p>nor here</p>")
    plan = plan_message(data, links=True, pixel=False, text_links=True)
    assert not plan.changes
    assert render(plan) == data


CASES = [
    ("utf-8", "quoted-printable", "https://bücher.example/é?x=1"),
    ("utf-8", "base64", "https://example.com/naïve"),
    ("utf-8", "8bit", "https://example.com/a_(b)"),
    ("iso-8859-1", "8bit", "https://example.com/café"),
    ("windows-1252", "quoted-printable", "https://example.com/€uro"),
    ("shift_jis", "8bit", "https://example.jp/日本語"),
    ("shift_jis", "base64", "https://example.jp/ソ"),  # "ソ" is 0x83 0x5C: "\\" second
    ("iso-2022-jp", "7bit", "https://example.jp/日本語"),
    ("koi8-r", "quoted-printable", "https://example.ru/путь"),
]


@pytest.mark.parametrize(("charset", "encoding", "url"), CASES)
def test_charsets_and_transfer_encodings_are_kept(charset: str, encoding: str, url: str) -> None:
    lines = ["Hello, привет? no: plain words", f"Go to {url}.", "Bye"]
    if charset not in ("utf-8", "koi8-r"):
        lines[0] = "Hello, plain words"
    text = "\r\n".join(lines) + "\r\n"
    body = text.encode(charset)
    if encoding == "base64":
        body = base64.encodebytes(body).replace(b"\n", b"\r\n")
    elif encoding == "quoted-printable":
        body = binascii.b2a_qp(body, istext=True)
    header = (
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {encoding}"
    )
    data = header.encode() + b"\r\n\r\n" + body

    plan = plan_message(data, links=False, pixel=False, text_links=True)
    assert [link.url for link in plan.links] == [url]
    out = render(plan)
    assert out.startswith(header.encode() + b"\r\n\r\n")
    [entity] = mime.text_parts(mime.parse(out))
    decoded = mime.decode_body(out[entity.body_start :], encoding).decode(charset)
    assert decoded == text.replace(url, "https://t.example/c/L0?a=1&b=2")
    assert as_written(plan) == data
    if encoding != "base64" and charset != "iso-2022-jp":  # kept line by line
        assert out.split(b"\r\n")[3] == data.split(b"\r\n")[3]
        assert out.split(b"\r\n")[5:] == data.split(b"\r\n")[5:]


def test_a_7bit_text_line_that_would_pass_998_octets_makes_the_part_quoted_printable() -> None:
    line = "x" * 960 + " https://example.com/" + "y" * 10
    data = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    plan = plan_message(
        data + line.encode() + b"\r\nnext\r\n", links=False, pixel=False, text_links=True
    )
    out = plan.render(open_url=None, click_url=lambda link: "https://t.example/c/" + "T" * 60)
    assert out.startswith(
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert max(len(line) for line in out.split(b"\r\n")) <= 76
    [entity] = mime.text_parts(mime.parse(out))
    body = mime.decode_body(out[entity.body_start :], "quoted-printable")
    assert body == ("x" * 960 + " https://t.example/c/" + "T" * 60 + "\r\nnext\r\n").encode()


def flowed_message(text: str, *, delsp: bool) -> bytes:
    parameters = "; format=flowed" + ("; delsp=yes" if delsp else "")
    return (
        f"Content-Type: text/plain; charset=utf-8{parameters}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + text.encode()


def test_flowed_soft_breaks_stay_soft_and_urls_whole() -> None:
    text = (
        "Our story is on the blog at https://roaster.example/blog/huila \r\n"
        "and the shop is at https://shop.example/ \r\n"
        "> quoted: https://roaster.example/q \r\n"
        "> more quoted text\r\n"
    )
    data = flowed_message(text, delsp=False)
    plan = plan_message(data, links=False, pixel=False, text_links=True)
    assert [link.url for link in plan.links] == [
        "https://roaster.example/blog/huila",
        "https://shop.example/",
        "https://roaster.example/q",
    ]
    lines = render(plan).split(b"\r\n\r\n", 1)[1].split(b"\r\n")
    assert lines[:4] == [
        b"Our story is on the blog at https://t.example/c/L0?a=1&b=2 ",
        b"and the shop is at https://t.example/c/L1?a=1&b=2 ",
        b"> quoted: https://t.example/c/L2?a=1&b=2 ",
        b"> more quoted text",
    ]


def test_delsp_yes_a_url_a_soft_break_splits_is_left_untracked() -> None:
    text = (
        "Reset your password at https://accounts.example/reset?tok \r\n"  # split
        "en=abc123 within the hour, or read  \r\n"  # a space of the text's, then the break's
        "https://accounts.example/help first.\r\n"
        " https://accounts.example/stuffed\r\n"  # space-stuffed
    )
    data = flowed_message(text, delsp=True)
    plan = plan_message(data, links=False, pixel=False, text_links=True)
    assert [link.url for link in plan.links] == [
        "https://accounts.example/help",
        "https://accounts.example/stuffed",
    ]
    out = render(plan)
    assert out == data.replace(
        b"https://accounts.example/help", b"https://t.example/c/L0?a=1&b=2"
    ).replace(b"https://accounts.example/stuffed", b"https://t.example/c/L1?a=1&b=2")


def test_text_links_stop_at_the_message_cap() -> None:
    html = "".join(f'<a href="https://e.example/h{n}">x</a>' for n in range(10))
    text = "\n".join(f"Item {n}: https://e.example/t{n}" for n in range(300)) + "\n"
    plan = plan_message(alternative(text, html), links=True, pixel=False, text_links=True)
    assert len(plan.links) == MAX_TRACKED_LINKS == 250
    assert plan.links[-1].url == "https://e.example/t239"
    text_out, _ = bodies(render(plan))
    assert "Item 239: https://t.example/c/L249?a=1&b=2\n" in text_out
    assert "Item 240: https://e.example/t240\n" in text_out


def test_a_text_part_that_cannot_be_decoded_is_left_as_it_came() -> None:
    """It costs the message's HTML tracking nothing: that part alone goes untracked."""
    html_part = (
        b"--z\r\nContent-Type: text/html\r\n\r\n"
        b'<html><body><a href="https://e.example/html">x</a></body></html>\r\n'
    )
    for broken in (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJDR",
        b"Content-Type: text/plain; charset=utf-16\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nANhBAA==",
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\nhttps://e.example/text",
    ):
        data = (
            b"Content-Type: multipart/alternative; boundary=z\r\n\r\n--z\r\n"
            + broken
            + b"\r\n"
            + html_part
            + b"--z--\r\n"
        )
        plan = plan_message(data, links=True, pixel=False, text_links=True, unsubscribe=True)
        assert [link.url for link in plan.links] == ["https://e.example/html"]
        out = render(plan)
        assert broken in out
        assert b"https://t.example/c/L0" in out


def test_only_text_bodies_are_tracked_not_attachments_attached_or_signed_messages() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\n"
        b"--z\r\nContent-Type: text/plain\r\n\r\nBody: https://e.example/body\r\n"
        b"--z\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n"
        b"\r\nAttached: https://e.example/attached\r\n"
        b"--z\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: forwarded\r\n\r\nForwarded: https://e.example/forwarded\r\n"
        b"--z\r\nContent-Type: multipart/signed; boundary=s\r\n\r\n"
        b"--s\r\nContent-Type: text/plain\r\n\r\nSigned: https://e.example/signed\r\n--s--\r\n"
        b"--z--\r\n"
    )
    plan = plan_message(data, links=True, pixel=True, text_links=True)
    assert [link.url for link in plan.links] == ["https://e.example/body"]
    assert render(plan) == data.replace(
        b"https://e.example/body", b"https://t.example/c/L0?a=1&b=2"
    )


# --- properties -----------------------------------------------------------------------

URLS = st.builds(
    "{}://{}.example/{}{}".format,
    st.sampled_from(["https", "http", "HTTPS"]),
    st.sampled_from(["e", "bücher", "shop.e", "xn--x"]),
    st.text(alphabet="abc/-_=&?#%é()", max_size=20),
    st.sampled_from(["", ")", ".", "?!", ",", "'", "é"]),
)
LINES = st.one_of(
    st.text(alphabet=st.sampled_from(list("ab =<>\"'()&é\t.:{}-")), max_size=100),
    st.builds(
        "{}{}{}{}".format,
        st.sampled_from(["", "see ", "(", "<", "'", "x", "> ", " ", "\u00a0"]),
        URLS,
        st.sampled_from(["", " ", ">", ") now", ".", "\u00a0after", "  "]),
        st.text(alphabet="pq =", max_size=40),
    ),
    st.just("-- "),
    st.just("{{amazonSESUnsubscribeUrl}} and https://e.example/u"),
)


def hard_lines(body: bytes, quoted: bool) -> list[bytes]:
    """The lines of an encoded body, each with its line break (quoted-printable soft
    breaks stay inside their line)."""
    if not quoted:
        return body.splitlines(keepends=True)
    return [line for line in re.findall(rb"(?:[^\n]*=\r?\n)*[^\n]*(?:\n|$)", body) if line]


@settings(max_examples=250, deadline=None)
@given(
    lines=st.lists(LINES, min_size=1, max_size=20),
    eol=st.sampled_from(["\r\n", "\n"]),
    terminated=st.booleans(),
    charset=st.sampled_from(["utf-8", "iso-8859-1", "utf-16"]),
    encoding=st.sampled_from(["quoted-printable", "8bit", "base64"]),
    flowed=st.sampled_from(["", "; format=flowed", "; format=flowed; delsp=yes"]),
    unsubscribe=st.booleans(),
)
def test_rendering_changes_only_the_lines_with_urls(
    lines: list[str],
    eol: str,
    terminated: bool,
    charset: str,
    encoding: str,
    flowed: str,
    unsubscribe: bool,
) -> None:
    if charset == "utf-16":
        encoding = "base64"
    text = eol.join(lines) + (eol if terminated else "")
    octets = text.encode(charset, "replace")
    quoted = encoding == "quoted-printable"
    if quoted:
        body = binascii.b2a_qp(octets, istext=True)
    elif encoding == "base64":
        body = base64.encodebytes(octets).replace(b"\n", eol.encode())
    else:
        body = octets
    data = (
        f"Content-Type: text/plain; charset={charset}{flowed}\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + body
    plan = plan_message(data, links=False, pixel=False, text_links=True, unsubscribe=unsubscribe)

    # With every slot filled as it was written, the copy is the message, byte for byte.
    assert as_written(plan) == data
    out = plan.render(
        open_url=None, click_url=click_url, unsubscribe_url="https://t.example/u/X?a=1&b=2"
    )
    if not plan.changes:
        assert out == data
        return
    [entity] = mime.text_parts(mime.parse(out))
    new_body = out[entity.body_start :]
    decoded = mime.decode_body(new_body, entity.transfer_encoding).decode(charset)
    before = octets.decode(charset).split("\n")
    after = decoded.split("\n")
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        if old != new:  # a line changes only where a URL or a placeholder was
            assert "://" in old.lower() or (unsubscribe and "{{amazonSESUnsubscribeUrl}}" in old)
        assert old.rstrip("\r").endswith(" ") == new.rstrip("\r").endswith(" ")  # soft breaks
    assert decoded.count("https://t.example/c/") == len(plan.links)
    if entity.transfer_encoding == encoding != "base64" and charset != "utf-16":
        changed = {n for n, (old, new) in enumerate(zip(before, after, strict=True)) if old != new}
        kept = [line for n, line in enumerate(hard_lines(body, quoted)) if n not in changed]
        rest = iter(hard_lines(new_body, quoted))
        assert all(line in rest for line in kept)


def test_own_messages_with_text_links_and_unsubscribe_rewrite_or_say_why() -> None:
    rewritten = sum(
        assert_only_bodies_changed(path) for path in sorted((FIXTURES / "mime").glob("*.eml"))
    )
    assert rewritten >= 5


def test_corpus_messages_with_text_links_and_unsubscribe_rewrite_or_say_why(corpus: Path) -> None:
    rewritten = sum(
        assert_only_bodies_changed(path) for path in sorted((corpus / "mime").glob("*.eml"))
    )
    assert rewritten >= 25


def outside(data: bytes, entities: list[mime.Entity]) -> list[bytes]:
    """The bytes between and around the given entities."""
    segments = []
    pos = 0
    for entity in entities:
        segments.append(data[pos : entity.start])
        pos = entity.end
    segments.append(data[pos:])
    return segments


def assert_only_bodies_changed(path: Path) -> bool:
    """Every byte outside the rewritten bodies is the message's own; whether the
    message was rewritten."""
    data = path.read_bytes()
    try:
        plan = plan_message(data, links=True, pixel=True, text_links=True, unsubscribe=True)
    except RewriteFailure:
        return False
    out = render(plan)
    before, after = mime.parse(data).walk(), mime.parse(out).walk()
    assert [e.content_type for e in after] == [e.content_type for e in before], path.name
    starts = {part.entity.start for part in plan.parts}
    changed = [n for n, entity in enumerate(before) if entity.start in starts]
    assert outside(out, [after[n] for n in changed]) == outside(data, [before[n] for n in changed])
    assert all(part.plain == (part.entity.content_type == "text/plain") for part in plan.parts)
    return plan.changes
