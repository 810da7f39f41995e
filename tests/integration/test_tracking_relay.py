"""Tracking through the relay: per-recipient copies, signed links, the pixel, and every
other byte as it was."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from pixelpost.config import parse_config_text
from pixelpost.core import mime
from pixelpost.core.html import pixel_html
from pixelpost.store import SQLiteStore
from tests.conftest import (
    FIXTURES,
    RelayStarter,
    codec_for,
    config_text,
    events_of,
    make_config,
    published,
)
from tests.sink import SinkHandler

ATTACHMENT = bytes(range(256)) * 64
TEXT = "Hello,\nsee https://example.com/plain-text-link (text parts are never rewritten).\n"


def newsletter(*, config_set: str) -> bytes:
    html = (FIXTURES / "html" / "welcome.html").read_text("utf-8")
    html = re.sub(r"\{\{\s*(\w+)\s*\}\}", r"https://example.com/\1?utm=1&amp;x=2", html)
    html = html.replace(
        "</body>",
        '<a ses:no-track href="https://example.com/unsubscribe">u</a>'
        '<a ses:tags="slot:footer;kind:social" href="https://example.com/follow">f</a></body>',
    )
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "a@example.org, b@example.org"
    message["Subject"] = "Welcome"
    message["X-Config-Set"] = config_set
    message["X-Message-Tags"] = "campaign=welcome"
    message.set_content(TEXT)
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    message.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="a.pdf")
    return message.as_bytes(policy=policy.SMTP)


async def send(port: int, message: bytes, rcpts: list[str]) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        _, reply = await client.sendmail("news@example.com", rcpts, message)
        return reply


async def test_each_recipient_gets_a_copy_with_its_own_signed_tracking(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    codec = codec_for(config)
    original = newsletter(config_set="marketing")
    original_parsed = message_from_bytes(original, policy=policy.default)

    await send(relay.address.port, original, ["a@example.org", "b@example.org"])

    await handler.wait(2)
    assert sorted(tuple(a.rcpt_tos) for a in handler.arrivals) == [
        ("a@example.org",),
        ("b@example.org",),
    ]
    message_ids = set()
    for arrival in handler.arrivals:
        [rcpt] = arrival.rcpt_tos
        assert f"for <{rcpt}>;".encode() in arrival.content.split(b"\r\n\r\n", 1)[0]
        parsed = message_from_bytes(arrival.content, policy=policy.default)
        assert "X-Config-Set" not in parsed
        assert "X-Message-Tags" not in parsed
        html_part = parsed.get_body(("html",))
        text_part = parsed.get_body(("plain",))
        assert html_part is not None
        assert text_part is not None
        assert html_part["Content-Transfer-Encoding"] == "quoted-printable"
        assert html_part.get_content_charset() == "utf-8"
        html = html_part.get_content()
        assert "ses:" not in html

        [pixel] = re.findall(r'<img alt="" src="https://t\.example/o/([^"]+)"', html)
        message_id = codec.read_open(pixel).message_id
        message_ids.add(message_id)
        assert pixel_html(f"https://t.example/o/{pixel}") + "</body>" in html

        tracked = re.findall(r"""href=["']https://t\.example/c/([^"']+)["']""", html)
        clicks = [codec.read_click(token.replace("&amp;", "&")) for token in tracked]
        assert {click.message_id for click in clicks} == {message_id}
        assert [click.link_index for click in clicks] == list(range(len(clicks)))
        urls = [click.url for click in clicks]
        assert "https://example.com/action_url?utm=1&x=2" in urls
        assert "https://example.com/unsubscribe" not in urls
        assert '<a href="https://example.com/unsubscribe">u</a>' in html
        follow = next(click for click in clicks if click.url == "https://example.com/follow")
        assert follow.tags == {"slot": ("footer",), "kind": ("social",)}

        assert text_part.get_content().replace("\r\n", "\n") == TEXT
        [pdf] = [p for p in parsed.walk() if p.get_content_type() == "application/pdf"]
        assert pdf.get_content() == ATTACHMENT
        original_text = original_parsed.get_body(("plain",))
        assert original_text is not None
        assert text_part.as_bytes() == original_text.as_bytes()
    assert len(message_ids) == 2


async def test_a_set_that_tracks_nothing_passes_mail_through_untouched(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    original = newsletter(config_set="untracked")

    await send(relay.address.port, original, ["a@example.org", "b@example.org"])

    await handler.wait(1)
    [arrival] = handler.arrivals
    assert arrival.rcpt_tos == ["a@example.org", "b@example.org"]
    body = arrival.content.split(b"\r\n", 3)[3]  # after the three lines of Received:
    assert body == original.replace(b"X-Config-Set: untracked\r\n", b"").replace(
        b"X-Message-Tags: campaign=welcome\r\n", b""
    )


async def test_a_rendering_failure_delivers_the_original_and_says_why(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    message = (
        b"From: a@example.com\r\nSubject: klingon\r\n"
        b"Content-Type: text/html; charset=x-klingon\r\n\r\n"
        b'<a href="https://example.com/">x</a>\r\n'
    )

    await send(relay.address.port, message, ["a@example.org", "b@example.org"])

    await handler.wait(1)
    [arrival] = handler.arrivals
    assert arrival.content.endswith(message)
    await events_of(store, delivery=1)
    events = await published(store)
    assert [e["eventType"] for e in events] == ["Send", "Rendering Failure", "Delivery"]
    failure = events[1]
    assert "x-klingon" in failure["failure"]["errorMessage"]
    assert failure["mail"]["destination"] == ["a@example.org", "b@example.org"]
    assert failure["mail"]["tags"]["ses:configuration-set"] == ["default"]


async def test_a_message_from_an_archive_is_read_past_its_from_line_and_blank_line(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    """An mbox "From " line and an empty line before the header section: the message is
    read from its header section on, tracked, and goes on without them."""
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    message = newsletter(config_set="marketing")
    archived = b"From news@example.com Fri Dec  4 08:00:00 2026\r\n\r\n" + message

    await send(relay.address.port, archived, ["a@example.org"])

    await handler.wait(1)
    [arrival] = handler.arrivals
    assert b"From news@example.com Fri" not in arrival.content
    parsed = message_from_bytes(arrival.content, policy=policy.default)
    assert parsed["Subject"] == "Welcome"
    assert "X-Config-Set" not in parsed
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert 'src="https://t.example/o/' in html_part.get_content()
    await events_of(store, delivery=1)
    [send_event, *_] = await published(store)
    assert send_event["mail"]["commonHeaders"]["subject"] == "Welcome"
    assert send_event["mail"]["tags"]["ses:configuration-set"] == ["marketing"]


async def pixels_through_the_relay(
    relay_port: int, handler: SinkHandler, paths: list[Path]
) -> int:
    """Send each message through the relay; how many arrived with a pixel."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port) as client:
        for path in paths:
            _, reply = await client.sendmail("a@example.com", ["b@example.org"], path.read_bytes())
            assert reply.startswith("2.0.0 Ok"), (path.name, reply)

    await handler.wait(len(paths))
    with_pixel = 0
    for arrival in handler.arrivals:
        root = mime.parse(arrival.content)
        for entity in mime.html_parts(root):
            try:
                octets = mime.decode_body(
                    arrival.content[entity.body_start : entity.end], entity.transfer_encoding
                )
            except mime.TransferEncodingError:
                continue  # broken on arrival: delivered untouched
            with_pixel += b"t.example/o/" in octets or b"t\x00.\x00e\x00x" in octets
    return with_pixel


async def test_every_own_message_goes_through_with_tracking_where_it_can(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    paths = sorted((FIXTURES / "mime").glob("*.eml"))
    # Those tracked: the five with an HTML body of their own to rewrite.
    assert await pixels_through_the_relay(relay.address.port, handler, paths) == 5


async def test_every_corpus_message_goes_through_with_tracking(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, corpus: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    paths = sorted((corpus / "mime").glob("*.eml"))
    assert await pixels_through_the_relay(relay.address.port, handler, paths) >= 25


async def test_base64_html_stays_base64(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    html = '<p>Grüße</p><a href="https://example.com/ä">x</a>'.encode("iso-8859-1")
    message = (
        b"Subject: b64\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(html).replace(b"\n", b"\r\n")
    )

    await send(relay.address.port, message, ["a@example.org"])

    await handler.wait(1)
    parsed = message_from_bytes(handler.arrivals[0].content, policy=policy.default)
    assert parsed["Content-Transfer-Encoding"] == "base64"
    assert isinstance(parsed, EmailMessage)
    content = parsed.get_content()
    assert content.startswith('<p>Grüße</p><a href="https://t.example/c/')
    assert content.split('href="', 1)[1].split('"', 1)[0].endswith("/example.com/%C3%A4")


async def test_a_sets_tracking_url_is_the_base_of_its_links(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    toml = config_text(f"smtp://127.0.0.1:{port}", tmp_path).replace(
        "[config_sets.marketing]\n",
        '[config_sets.marketing]\ntracking_url = "https://click.example.net/"\n',
    )
    relay = await start_relay(parse_config_text(toml, environ={}))
    html = b'<a href="https://example.com/">x</a>'
    for config_set in (b"marketing", b"default"):
        message = b"X-Config-Set: " + config_set + b"\r\nContent-Type: text/html\r\n\r\n" + html
        await send(relay.address.port, message, ["a@example.org"])

    await handler.wait(2)
    marketing, default = (a.content for a in handler.arrivals)
    assert b'<a href="https://click.example.net/c/' in marketing
    assert b'src="https://click.example.net/o/' in marketing
    assert b'<a href="https://t.example/c/' in default
