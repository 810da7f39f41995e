"""Unsubscribes on the relay's side: each copy's RFC 8058 List-Unsubscribe fields and
SES's placeholder, the per-message tracking controls, the `mailto:` unsubscribe at the
intake, and the copies an unsubscribe stops, in its scope. A real relay and intake, a
real aiosmtpd upstream and the real SQLite store."""

from __future__ import annotations

import dataclasses
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from pixelpost.core.headers import parse_header_section
from pixelpost.core.suppression import Reason
from pixelpost.core.tokens import TokenCodec
from pixelpost.store import SQLiteStore
from relay.tracking import with_unsubscribe_fields
from tests.conftest import RelayStarter, codec_for, events_of, published, recorded, until
from tests.integration.conftest import IntakeStarter
from tests.integration.test_intake import RETURN_DOMAIN, intake_config, send_one, submit
from tests.integration.test_tracking_relay import newsletter
from tests.integration.test_tracking_relay import send as send_tracked
from tests.sink import SinkHandler

UNSUBSCRIBE = "unsubscribe = true\n"
ONE_CLICK = "List-Unsubscribe=One-Click"


def fields_of(copy: bytes) -> dict[str, list[str]]:
    """The copy's header fields by lowercased name, values unfolded."""
    section = parse_header_section(copy)
    found: dict[str, list[str]] = {}
    for field in section.fields:
        found.setdefault(field.name.lower(), []).append(
            re.sub(r"\r?\n[ \t]", " ", field.value(copy)).strip()
        )
    return found


def unsubscribe_uris(copy: bytes) -> list[str]:
    [value] = fields_of(copy)["list-unsubscribe"]
    return re.findall(r"<([^>]*)>", value)


def personal(*, config_set: str, extra: dict[str, str] | None = None, html: str = "") -> bytes:
    """A message with SES's unsubscribe placeholder in its text and HTML parts."""
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "a@example.org"
    message["Subject"] = "Your digest"
    message["X-Config-Set"] = config_set
    for name, value in (extra or {}).items():
        message[name] = value
    message.set_content("Hello.\nLeave the list: {{amazonSESUnsubscribeUrl}}\n")
    message.add_alternative(
        html
        or '<html><body><p>Hello, read <a href="https://example.com/a">this</a>.</p>'
        '<p><a href="{{amazonSESUnsubscribeUrl}}">Unsubscribe</a></p></body></html>',
        subtype="html",
    )
    return message.as_bytes(policy=policy.SMTP)


def bodies(copy: bytes) -> tuple[str, str]:
    parsed = message_from_bytes(copy, policy=policy.default)
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()  # type: ignore[attr-defined]


async def test_each_copy_offers_its_own_one_click_unsubscribe(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path, marketing=UNSUBSCRIBE)
    relay = await start_relay(config)
    codec = codec_for(config)

    await send_tracked(
        relay.address.port, personal(config_set="marketing"), ["a@example.org", "b@example.org"]
    )
    await events_of(store, delivery=2)
    for arrival in handler.arrivals:
        [recipient] = arrival.rcpt_tos
        copy = arrival.content
        found = fields_of(copy)
        assert found["list-unsubscribe-post"] == [ONE_CLICK]
        url, mailto = unsubscribe_uris(copy)
        assert url.startswith("https://t.example/u/")
        token = codec.read_unsubscribe(url.removeprefix("https://t.example/u/"))
        assert (token.address, token.config_set, token.account) == (
            recipient,
            "marketing",
            False,
        )
        assert re.fullmatch(rf"mailto:u-[a-z2-7]{{45}}@{re.escape(RETURN_DOMAIN)}", mailto)
        assert codec.read_unsubscribe_address(mailto.removeprefix("mailto:")) == token.message_id
        # The fields come after the relay's Received: and before the message's own.
        names = [f.name.lower() for f in parse_header_section(copy).fields]
        assert names[:3] == ["received", "list-unsubscribe", "list-unsubscribe-post"]
        # SES's placeholder is the same URL, in the text part and in the HTML part, where
        # it is never a click-tracked link.
        text, html = bodies(copy)
        assert f"Leave the list: {url}" in text
        assert f'href="{url}"' in html
        assert "{{amazonSESUnsubscribeUrl}}" not in text + html
        assert 'href="https://t.example/c/' in html  # the other link is tracked


async def test_a_messages_own_list_unsubscribe_is_kept_unless_the_set_overrides_it(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(
        f"smtp://127.0.0.1:{port}",
        tmp_path,
        marketing=UNSUBSCRIBE,
    )
    relay = await start_relay(config)
    own = {"List-Unsubscribe": "<https://lists.example.com/leave?id=7>"}

    await send_tracked(
        relay.address.port, personal(config_set="marketing", extra=own), ["a@x.org"]
    )
    await events_of(store, delivery=1)
    copy = handler.arrivals[0].content
    assert fields_of(copy)["list-unsubscribe"] == ["<https://lists.example.com/leave?id=7>"]
    assert "list-unsubscribe-post" not in fields_of(copy)
    # The placeholder still becomes pixelpost's URL.
    assert "https://t.example/u/" in bodies(copy)[0]

    handler.arrivals.clear()
    overriding = intake_config(
        f"smtp://127.0.0.1:{port}",
        tmp_path / "again",
        marketing=UNSUBSCRIBE + "unsubscribe_override = true\n",
    )
    relay = await start_relay(overriding)
    await send_tracked(
        relay.address.port, personal(config_set="marketing", extra=own), ["a@x.org"]
    )
    await until(lambda: handler.arrivals, "the copy")
    copy = handler.arrivals[0].content
    [url, _] = unsubscribe_uris(copy)
    assert url.startswith("https://t.example/u/")
    assert fields_of(copy)["list-unsubscribe-post"] == [ONE_CLICK]


@pytest.mark.parametrize(
    ("controls", "pixel", "links", "unsubscribe"),
    [
        ({}, True, True, True),
        ({"X-Track-Opens": "no"}, False, True, True),
        ({"X-Track-Clicks": "no"}, True, False, True),
        ({"X-Unsubscribe": "no"}, True, True, False),
        ({"X-Mailgun-Track": "no"}, False, False, True),
        ({"X-Mailgun-Track-Clicks": "no", "X-Mailgun-Track-Opens": "yes"}, True, False, True),
        ({"X-PM-TrackOpens": "false", "X-PM-TrackLinks": "HtmlOnly"}, False, True, True),
        ({"X-PM-TrackLinks": "None"}, True, False, True),
    ],
)
async def test_per_message_controls_override_the_set_and_are_removed(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    controls: dict[str, str],
    pixel: bool,
    links: bool,
    unsubscribe: bool,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path, marketing=UNSUBSCRIBE)
    relay = await start_relay(config)

    await send_tracked(
        relay.address.port, personal(config_set="marketing", extra=controls), ["a@example.org"]
    )
    await events_of(store, delivery=1)
    copy = handler.arrivals[0].content
    _, html = bodies(copy)
    assert ("https://t.example/o/" in html) is pixel
    assert ('href="https://t.example/c/' in html) is links
    assert ('href="https://example.com/a"' in html) is not links
    assert ("list-unsubscribe" in fields_of(copy)) is unsubscribe
    assert ("https://t.example/u/" in html) is unsubscribe
    for name in controls:
        assert name.lower() not in fields_of(copy)


@pytest.mark.parametrize(
    ("controls", "named"),
    [
        ({"X-Track-Opens": "sometimes"}, 'X-Track-Opens: "sometimes" is not yes or no'),
        ({"X-PM-TrackLinks": "Everything"}, "X-PM-TrackLinks"),
        (
            {"X-Track-Clicks": "yes", "X-PM-TrackLinks": "None"},
            "X-Track-Clicks and X-PM-TrackLinks contradict each other",
        ),
    ],
)
async def test_a_bad_control_is_refused_by_name_and_nothing_is_sent(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    controls: dict[str, str],
    named: str,
) -> None:
    handler, port = sink
    relay = await start_relay(intake_config(f"smtp://127.0.0.1:{port}", tmp_path))
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send_tracked(
            relay.address.port, personal(config_set="marketing", extra=controls), ["a@x.org"]
        )
    assert refused.value.code == 554
    assert named in refused.value.message
    await until(relay.idle, "the relay idle")
    assert handler.arrivals == []
    assert recorded(store) == []


async def test_a_control_that_turns_tracking_on_needs_a_configuration_set(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(dataclasses.replace(config, default_config_set=None))
    message = personal(config_set="marketing", extra={"X-Track-Opens": "yes"}).replace(
        b"X-Config-Set: marketing\r\n", b""
    )
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send_tracked(relay.address.port, message, ["a@example.org"])
    assert "X-Track-Opens turns tracking on, but the message has no configuration set" in (
        refused.value.message
    )
    # Turning something off needs none.
    message = message.replace(b"X-Track-Opens: yes", b"X-Track-Opens: no")
    assert (await send_tracked(relay.address.port, message, ["a@example.org"])).startswith("2.0.0")
    await until(lambda: handler.arrivals, "the copy")


def unsubscribe_mail(to: str, sender: str) -> bytes:
    """What a mail client sends to a List-Unsubscribe `mailto:`."""
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: unsubscribe\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <u1@example.org>\r\n\r\n"
        "This message was automatically generated by Gmail.\r\n"
    ).encode()


@pytest.mark.parametrize("scope", ["config_set", "account"])
async def test_mail_to_the_mailto_unsubscribes_in_the_sets_scope(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
    scope: str,
) -> None:
    handler, port = sink
    config = intake_config(
        f"smtp://127.0.0.1:{port}",
        tmp_path,
        marketing=f'{UNSUBSCRIBE}unsubscribe_scope = "{scope}"\n',
    )
    relay = await start_relay(config)
    intake, counts = await start_intake_server(config)
    codec = codec_for(config)

    arrival = await send_one(relay, handler, store, "jane@example.org")
    [_, mailto] = unsubscribe_uris(arrival.content)
    address = mailto.removeprefix("mailto:")
    copy_id = codec.read_unsubscribe_address(address)

    reply = await submit(
        intake.address.port,
        [address],
        unsubscribe_mail(address, "jane@example.org"),
        "jane@example.org",
    )
    assert reply.startswith("250")
    events = await events_of(store, subscription=1)
    [(_, message_id, subscription)] = [e for e in events if e[0] == "subscription"]
    assert message_id == copy_id
    assert subscription["source"] == "UnsubscribeMailto"
    assert subscription["contactList"] == "marketing"
    assert subscription["newTopicPreferences"]["unsubscribeAll"] is True
    assert subscription["oldTopicPreferences"]["unsubscribeAll"] is False
    [event] = [e for e in await published(store) if e["eventType"] == "Subscription"]
    assert event["mail"]["destination"] == ["jane@example.org"]
    scope_set = None if scope == "account" else "marketing"
    entry = await store.suppression("jane@example.org", scope_set)
    assert entry is not None
    assert (entry.reason, entry.message_id) == (Reason.UNSUBSCRIBE, copy_id)
    assert counts.counts["unsubscribe"] == 1

    # Sent again (a client retrying): one event still.
    await submit(
        intake.address.port,
        [address],
        unsubscribe_mail(address, "jane@example.org"),
        "jane@example.org",
    )
    assert [kind for kind, _, _ in recorded(store)].count("subscription") == 1

    # The set's next message to the address is not sent; another set's is, unless the
    # unsubscribe was from all mail.
    delivered = len(handler.arrivals)
    await send_tracked(
        relay.address.port, newsletter(config_set="marketing"), ["jane@example.org"]
    )
    events = await events_of(store, bounce=1)
    assert events[-1][2]["bounceSubType"] == "OnAccountSuppressionList"
    await send_tracked(relay.address.port, newsletter(config_set="default"), ["jane@example.org"])
    if scope == "account":
        events = await events_of(store, bounce=2)
        assert events[-1][2]["bounceSubType"] == "OnAccountSuppressionList"
        await until(relay.idle, "the relay idle")
        assert len(handler.arrivals) == delivered
    else:
        await until(lambda: len(handler.arrivals) == delivered + 1, "the other set's copy")


async def test_the_intake_refuses_a_forged_unsubscribe_address_and_ignores_bounces_to_one(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    start_intake_server: IntakeStarter,
    tmp_path: Path,
    store: SQLiteStore,
) -> None:
    handler, port = sink
    config = intake_config(f"smtp://127.0.0.1:{port}", tmp_path, marketing=UNSUBSCRIBE)
    relay = await start_relay(config)
    intake, counts = await start_intake_server(config)
    arrival = await send_one(relay, handler, store, "jane@example.org")
    address = unsubscribe_uris(arrival.content)[1].removeprefix("mailto:")

    forged = TokenCodec([b"k" * 32]).unsubscribe_address(
        codec_for(config).read_unsubscribe_address(address), RETURN_DOMAIN
    )
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await submit(intake.address.port, [forged], unsubscribe_mail(forged, "x@example.org"))
    assert counts.counts["forged"] == 1

    # A notification from the null sender, or an auto-reply, unsubscribes nobody.
    await submit(intake.address.port, [address], unsubscribe_mail(address, "x@example.org"), "")
    auto = unsubscribe_mail(address, "jane@example.org").replace(
        b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:"
    )
    await submit(intake.address.port, [address], auto, "jane@example.org")
    assert "subscription" not in [kind for kind, _, _ in recorded(store)]
    assert await store.suppression("jane@example.org", "marketing") is None


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_the_fields_replace_any_the_message_had_in_its_line_ends(eol: bytes) -> None:
    message = eol.join(
        [
            b"From: a@example.com",
            b"List-Unsubscribe: <mailto:old@example.com>",
            b"Subject: hi",
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            b"",
            b"List-Unsubscribe: in the body stays",
            b"",
        ]
    )
    out = with_unsubscribe_fields(message, "https://t.example/u/abc", "mailto:u-x@b.example")
    assert out == eol.join(
        [
            b"List-Unsubscribe: <https://t.example/u/abc>,",
            b" <mailto:u-x@b.example>",
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            b"From: a@example.com",
            b"Subject: hi",
            b"",
            b"List-Unsubscribe: in the body stays",
            b"",
        ]
    )
    alone = with_unsubscribe_fields(message, "https://t.example/u/abc", None)
    assert alone.startswith(b"List-Unsubscribe: <https://t.example/u/abc>" + eol + b"List-")
