"""MIME structure on raw bytes, and the transfer encodings."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpost.core import mime
from pixelpost.core.mime import has_long_line

ALTERNATIVE = (
    b"From: a@example.com\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="outer-inner"\r\n'
    b"\r\n"
    b"--outer-inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--outer-inner\r\n"
    b"Content-Type: text/html; charset=ISO-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>caf=E9</p>\r\n"
    b"--outer-inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Disposition: attachment; filename=page.html\r\n"
    b"\r\n"
    b"<p>attached page</p>\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>forwarded</p>\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def body(data: bytes, entity: mime.Entity) -> bytes:
    return data[entity.body_start : entity.end]


def test_structure_of_nested_multiparts() -> None:
    root = mime.parse(ALTERNATIVE)

    assert root.content_type == "multipart/mixed"
    alternative, attachment, forwarded = root.children
    plain, html = alternative.children
    assert body(ALTERNATIVE, plain) == b"plain"
    assert body(ALTERNATIVE, html) == b"<p>caf=E9</p>"
    assert (html.charset, html.transfer_encoding) == ("iso-8859-1", "quoted-printable")
    assert attachment.attachment
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.children == ()
    assert mime.html_parts(root) == [html]
    assert mime.text_parts(root) == [plain]  # the attachment and the forwarded are not


@pytest.mark.parametrize(
    ("content_type", "flowed", "delsp"),
    [
        ("text/plain; format=flowed", True, False),
        ('text/plain; Format="Flowed"; DelSp=Yes', True, True),
        ("text/plain; format=flowed; delsp=no", True, False),
        ("text/plain; delsp=yes", False, False),  # delsp means nothing unflowed
        ("text/plain; format=fixed", False, False),
        ("text/html; format=flowed", False, False),  # only text/plain flows
        ("text/plain; charset=utf-8; x-format=flowed", False, False),
    ],
)
def test_format_flowed_and_delsp_are_read(content_type: str, flowed: bool, delsp: bool) -> None:
    entity = mime.parse(f"Content-Type: {content_type}\r\n\r\nx".encode())
    assert (entity.flowed, entity.delsp) == (flowed, delsp)


def test_signed_and_encrypted_content_is_never_entered() -> None:
    for sealed in (b"multipart/signed; protocol=x", b"multipart/encrypted; protocol=x"):
        data = (
            b"Content-Type: " + sealed + b"; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n"
        )
        root = mime.parse(data)
        assert root.children == ()
        assert mime.html_parts(root) == []
    pkcs7 = mime.parse(b"Content-Type: application/pkcs7-mime\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIAC")
    assert mime.html_parts(pkcs7) == []


def test_lenient_reading_of_malformed_structure() -> None:
    unterminated = (
        b"Content-Type: multipart/alternative; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nplain\n"
        b"--b\nContent-Type: text/html\n\n<p>never closed</p>\n"
    )
    plain, html = mime.parse(unterminated).children
    assert body(unterminated, plain) == b"plain"
    assert body(unterminated, html) == b"<p>never closed</p>\n"

    no_boundary = mime.parse(b"Content-Type: multipart/mixed\r\n\r\nbody")
    assert no_boundary.children == ()
    nonsense = mime.parse(b"Content-Type: garbage\r\n\r\n<p>x</p>")
    assert nonsense.content_type == "text/plain"
    headless = mime.parse(b"no headers at all\r\n")
    assert (headless.content_type, headless.body_start) == ("text/plain", 0)


def test_nesting_is_bounded() -> None:
    depth = 200
    data = (
        b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
            for n in range(depth)
        )
        + b"Content-Type: text/html\r\n\r\n<p>deep</p>\r\n"
    )
    root = mime.parse(data)
    assert len(root.walk()) == mime.MAX_DEPTH + 1


def test_a_content_type_as_long_as_a_message_is_read_in_bounded_time() -> None:
    """The standard library's parameter parser is quadratic: a megabyte of empty
    parameters would take minutes. Only its first MAX_CONTENT_TYPE characters are read."""
    data = (
        b'Content-Type: multipart/alternative; boundary="b"'
        + b";" * 1_000_000
        + b"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n"
    )
    started = time.perf_counter()
    root = mime.parse(data)
    assert time.perf_counter() - started < 2  # about 0.05 s; unbounded, minutes
    assert [entity.content_type for entity in root.walk()] == [
        "multipart/alternative",
        "text/html",
    ]


def test_the_parts_read_are_bounded_in_number() -> None:
    """A message of thousands of tiny parts, each with the longest Content-Type read:
    MAX_PARTS entities are read, the rest left as they are, in bounded time."""
    part = b"--b\r\nContent-Type: text/html; " + b";" * 2000 + b"\r\n\r\n<p>x</p>\r\n"
    data = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * 3000 + b"--b--\r\n"
    started = time.perf_counter()
    root = mime.parse(data)
    assert time.perf_counter() - started < 10  # about 1.5 s; unbounded, 3000 parts' worth
    assert len(root.walk()) == mime.MAX_PARTS
    assert root.children[-1].end < len(data) - len(part)


def test_parts_past_the_limit_cost_nothing() -> None:
    """Two million empty parts (20 MB): the delimiters are found as the parts are read,
    so the ones past MAX_PARTS are never looked for (all of them were collected first:
    16 s and 265 MB)."""
    data = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    data += b"--b\r\n\r\nx\r\n" * 2_000_000 + b"--b--\r\n"
    started = time.perf_counter()
    root = mime.parse(data)
    assert time.perf_counter() - started < 1  # about 10 ms
    assert len(root.walk()) == mime.MAX_PARTS


@settings(max_examples=500)
@given(octets=st.binary(max_size=400), crlf=st.booleans())
def test_quoted_printable_round_trip(octets: bytes, crlf: bool) -> None:
    like = b"a\r\nb" if crlf else b"a\nb"
    encoded, encoding = mime.encode_body(octets, "quoted-printable", like=like)
    assert encoding == "quoted-printable"
    assert mime.decode_body(encoded, encoding) == octets
    assert all(len(line.rstrip(b"\r")) <= 76 for line in encoded.split(b"\n"))
    assert encoded.isascii()


@settings(max_examples=200)
@given(octets=st.binary(max_size=400), ends_with_break=st.booleans())
def test_base64_round_trip(octets: bytes, ends_with_break: bool) -> None:
    like = b"QUJD\r\n" if ends_with_break else b"QUJD"
    encoded, _ = mime.encode_body(octets, "base64", like=like)
    assert mime.decode_body(encoded, "base64") == octets
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert encoded.endswith(b"\r\n") == (ends_with_break and bool(octets))


def test_long_lines_turn_7bit_into_quoted_printable() -> None:
    short = b"<p>" + b"x" * 990 + b"</p>\r\n"
    assert mime.encode_body(short, "7bit", like=short) == (short, "7bit")
    long = b"<p>" + b"x" * 996 + b"</p>\r\n"
    encoded, encoding = mime.encode_body(long, "8bit", like=long)
    assert encoding == "quoted-printable"
    assert mime.decode_body(encoded, encoding) == long
    assert mime.encode_body(long, "binary", like=long) == (long, "binary")


def test_undecodable_bodies() -> None:
    for data, encoding in ((b"QUJDR", "base64"), (b"begin 644 x", "x-uuencode")):
        try:
            mime.decode_body(data, encoding)
        except mime.TransferEncodingError:
            continue
        raise AssertionError(f"{encoding} {data!r} decoded")


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 997, 998, 999, 1000, 1001, 2500]),
            st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
        ),
        max_size=6,
    )
)
def test_a_long_line_is_found_wherever_it_is(lines: list[tuple[int, bytes]]) -> None:
    """What the regex `[^\\n]{1000,}` finds (a line of more than 998 octets, its CR
    counted), found a line at a time."""
    data = b"".join(b"x" * length + end for length, end in lines)
    assert has_long_line(data) == (re.search(rb"[^\n]{1000,}", data) is not None)


def test_finding_long_lines_is_linear_in_a_body_of_short_ones() -> None:
    """The regex took 3 s, holding the interpreter (and so the relay's event loop), on
    12 MB of 200-octet lines: every position was a new attempt at 1,000 octets. A line
    at a time takes some 30 ms."""
    body = (b"<p>" + b"text " * 40 + b"</p>\r\n") * 60_000
    started = time.perf_counter()
    assert not has_long_line(body)
    assert has_long_line(body + b"y" * 999 + b"\r\n")
    assert time.perf_counter() - started < 1.0
