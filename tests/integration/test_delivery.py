"""Delivery from the spool: deferrals and retries, bounces and notifications, restarts,
damaged files and several relays on one spool. Real relays, a real aiosmtpd upstream
and the real SQLite store; retries come after 200 ms (see `config_text`)."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
import zlib
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from prometheus_client import generate_latest

from pixelpost.app.cli import main
from pixelpost.app.runtime import spool_counts
from pixelpost.config import parse_config_text
from pixelpost.core.ids import message_id_time, new_message_id
from pixelpost.store import SQLiteStore
from relay.outbound.spoolfile import Copy, Envelope, encode
from tests.conftest import (
    RelayStarter,
    SinkStarter,
    config_text,
    events_of,
    make_config,
    published,
    recorded,
    until,
)
from tests.integration.test_relay_passthrough import MESSAGE, send
from tests.net import free_port
from tests.sink import Arrival, SinkHandler
from tracker.metrics import Metrics

THREE = ["a@example.org", "gone@example.org", "b@example.org"]


def details(events: list[tuple[str, str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [detail for found, _, detail in events if found == kind]


def notifications(handler: SinkHandler) -> list[tuple[Arrival, EmailMessage]]:
    """The delivery status notifications the upstream received, parsed."""
    found = []
    for arrival in handler.arrivals:
        if arrival.mail_from == "<>":  # how aiosmtpd reports the null reverse path
            parsed = message_from_bytes(arrival.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append((arrival, parsed))
    return found


async def test_upstream_down_mail_is_accepted_then_delivered_when_it_is_back(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    port = free_port()
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    assert "queued as" in await send(relay.address.port, MESSAGE)

    events = await events_of(store, delivery_delay=1)
    [delay] = details(events, "delivery_delay")
    assert delay["delayType"] == "TransientCommunicationFailure"
    [delayed] = delay["delayedRecipients"]
    assert delayed["emailAddress"] == "rcpt@example.org"
    assert delayed["status"] == "4.4.1"
    assert f"127.0.0.1:{port}" in delayed["diagnosticCode"]
    assert relay.spool.ids() != []

    handler, _ = await start_sink(port=port)
    await handler.wait(1)
    events = await events_of(store, delivery=1)
    assert [kind for kind, _, _ in events] == ["send", "delivery_delay", "delivery"]
    [delivery] = details(events, "delivery")
    assert delivery["recipients"] == ["rcpt@example.org"]
    assert delivery["smtpResponse"].startswith("250 ")
    assert delivery["reportingMTA"] == "relay.test"
    assert delivery["processingTimeMillis"] >= 100
    assert len(handler.arrivals) == 1
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert [e["eventType"] for e in await published(store)] == [
        "Send",
        "DeliveryDelay",
        "Delivery",
    ]


async def test_one_of_three_refused_bounces_with_a_notification_the_others_are_delivered(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user here"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    assert "queued as" in await send(relay.address.port, MESSAGE, rcpts=THREE)

    await handler.wait(2)  # the message, and the notification to its sender
    events = await events_of(store, delivery=1, bounce=1)
    [delivery] = details(events, "delivery")
    assert sorted(delivery["recipients"]) == ["a@example.org", "b@example.org"]
    [bounce] = details(events, "bounce")
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "NoEmail")
    [bounced] = bounce["bouncedRecipients"]
    assert bounced["emailAddress"] == "gone@example.org"
    assert bounced["status"] == "5.1.1"
    assert bounced["diagnosticCode"] == "smtp; 550 5.1.1 No such user here"

    message = next(a for a in handler.arrivals if a.mail_from == "sender@example.com")
    assert sorted(message.rcpt_tos) == ["a@example.org", "b@example.org"]
    [(arrival, report)] = notifications(handler)
    assert arrival.rcpt_tos == ["sender@example.com"]
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].as_string()  # type: ignore[index]
    assert "Final-Recipient: rfc822; gone@example.org" in status
    assert "Status: 5.1.1" in status
    assert "a@example.org" not in status
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_a_refusal_in_latin_1_bounces_once_and_the_others_get_one_copy(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    """Reply text that is not UTF-8 (servers echo addresses in Latin-1) is carried as
    U+FFFD; it once made recording fail and the message go out again and again."""
    handler, port = sink
    refusal = b"550 5.1.1 Empf\xe4nger unbekannt"
    handler.rcpt_replies["gone@example.org"] = refusal  # type: ignore[assignment]
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE, rcpts=["a@example.org", "gone@example.org"])

    events = await events_of(store, delivery=1, bounce=1)
    [bounce] = details(events, "bounce")
    assert bounce["bouncedRecipients"][0]["diagnosticCode"] == (
        "smtp; 550 5.1.1 Empf\ufffdnger unbekannt"
    )
    await until(relay.idle, "the relay done with the message")  # so no retry will come
    assert [a.rcpt_tos for a in handler.arrivals] == [["a@example.org"], ["sender@example.com"]]


async def test_every_recipient_refused_each_by_its_own_reply(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user here"
    handler.rcpt_replies["busy@example.org"] = "450 4.2.1 Mailbox busy"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE, rcpts=["gone@example.org", "busy@example.org"])

    events = await events_of(store, bounce=1, delivery_delay=1)
    [bounce] = details(events, "bounce")
    assert [r["emailAddress"] for r in bounce["bouncedRecipients"]] == ["gone@example.org"]
    assert bounce["bounceType"] == "Permanent"
    del handler.rcpt_replies["busy@example.org"]
    events = await events_of(store, delivery=1)
    [delivery] = details(events, "delivery")
    assert delivery["recipients"] == ["busy@example.org"]
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_a_refused_message_bounces_every_recipient(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.data_replies["rcpt@example.org"] = "554 5.7.1 Spam detected"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE)

    events = await events_of(store, bounce=1)
    [bounce] = details(events, "bounce")
    assert bounce["bouncedRecipients"][0]["diagnosticCode"] == "smtp; 554 5.7.1 Spam detected"
    await handler.wait(1)
    [(arrival, _)] = notifications(handler)
    assert arrival.rcpt_tos == ["sender@example.com"]
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert "delivery" not in [kind for kind, _, _ in recorded(store)]


async def test_a_notification_that_bounces_is_dropped_not_bounced(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.rcpt_replies["rcpt@example.org"] = "550 5.1.1 No such user here"
    handler.rcpt_replies["sender@example.com"] = "550 5.1.1 No such sender either"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE)

    await events_of(store, bounce=1)
    await until(relay.idle, "the notification tried, and given up")
    assert handler.arrivals == []
    assert [kind for kind, _, _ in recorded(store)] == ["send", "bounce"]


@pytest.mark.parametrize(
    ("relay_lines", "sender"),
    [("bounce_notifications = false", "sender@example.com"), ("", "")],
    ids=["notifications off", "null sender"],
)
async def test_no_notification_when_off_or_for_a_null_sender(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    relay_lines: str,
    sender: str,
) -> None:
    handler, port = sink
    handler.rcpt_replies["rcpt@example.org"] = "550 5.1.1 No such user here"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay=relay_lines))

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.address.port) as client:
        await client.sendmail(sender, ["rcpt@example.org"], MESSAGE)

    await until(lambda: handler.rcpt_attempts, "the delivery tried")
    await until(relay.idle, "the relay done with the message")  # no notification will come
    assert handler.rcpt_attempts == ["rcpt@example.org"]
    assert handler.data_attempts == 0
    # Mail from the null sender is a notification: relayed untracked, with no events.
    kinds = [kind for kind, _, _ in recorded(store)]
    assert kinds == ([] if sender == "" else ["send", "bounce"])


async def test_a_deferred_recipient_is_retried_alone_until_delivered(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.rcpt_replies["busy@example.org"] = "450 4.2.1 Mailbox busy"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send(relay.address.port, MESSAGE, rcpts=["a@example.org", "busy@example.org"])

    events = await events_of(store, delivery=1, delivery_delay=1)
    [delay] = details(events, "delivery_delay")
    assert delay["delayedRecipients"][0]["emailAddress"] == "busy@example.org"
    assert delay["delayType"] == "General"
    del handler.rcpt_replies["busy@example.org"]

    await handler.wait(2)
    assert [a.rcpt_tos for a in handler.arrivals] == [["a@example.org"], ["busy@example.org"]]
    events = await events_of(store, delivery=2)
    assert [kind for kind, _, _ in events] == ["send", "delivery", "delivery_delay", "delivery"]
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_a_timeout_after_the_final_dot_is_a_deferral_and_the_message_is_sent_again(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    """The upstream may have taken the message when its reply is late: a duplicate is
    possible, a loss is not."""
    handler, port = sink
    handler.hold = threading.Event()
    text = config_text(f"smtp://127.0.0.1:{port}", tmp_path).replace(
        'timeout = "5s"', 'timeout = "1s"'
    )
    relay = await start_relay(parse_config_text(text, environ={}))

    await send(relay.address.port, MESSAGE)

    events = await events_of(store, delivery_delay=1)
    [delay] = details(events, "delivery_delay")
    assert delay["delayType"] == "TransientCommunicationFailure"
    assert handler.data_attempts >= 1
    handler.hold.set()  # the upstream answers again (and finishes the first transaction)

    await events_of(store, delivery=1)
    assert 1 <= len(handler.arrivals) <= 2
    assert all(a.rcpt_tos == ["rcpt@example.org"] for a in handler.arrivals)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_mail_past_its_lifetime_bounces_as_transient(
    start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    port = free_port()
    relay = await start_relay(
        make_config(
            f"smtp://127.0.0.1:{port}",
            tmp_path,
            relay='max_queue_lifetime = "1s"\nbounce_notifications = false',
        )
    )

    await send(relay.address.port, MESSAGE)

    events = await events_of(store, bounce=1)
    [bounce] = details(events, "bounce")
    assert bounce["bounceType"] == "Transient"
    [bounced] = bounce["bouncedRecipients"]
    assert bounced["status"] == "4.4.7"
    assert "Delivery time expired after 1s" in bounced["diagnosticCode"]
    assert [kind for kind, _, _ in events][:2] == ["send", "delivery_delay"]
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_a_restart_resumes_the_spool_and_sends_no_second_send_event(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    port = free_port()
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    first = await start_relay(config)
    for _ in range(3):
        await send(first.address.port, MESSAGE)
    await events_of(store, delivery_delay=3)
    await first.stop()
    assert len(first.spool.ids()) == 3

    handler, _ = await start_sink(port=port)
    second = await start_relay(config)

    await handler.wait(3)
    events = await events_of(store, delivery=3)
    assert (
        sorted(kind for kind, _, _ in events)
        == ["delivery"] * 3 + ["delivery_delay"] * 3 + ["send"] * 3
    )
    await until(lambda: second.spool.ids() == [], "the spool emptied")
    assert len(handler.arrivals) == 3


async def test_a_damaged_spool_file_is_set_aside_and_never_delivered(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path
) -> None:
    handler, port = sink
    queue = tmp_path / "spool" / "queue"
    queue.mkdir(parents=True)

    def spooled(message_id: str, body: bytes) -> bytes:
        envelope = Envelope(
            id=message_id,
            mail_from="sender@example.com",
            copies=(Copy(id=message_id, recipients=("rcpt@example.org",)),),
            received_at=1.0,
            expires_at=1e12,
        )
        return encode(envelope, body)

    whole = spooled(f"{1:032x}", b"Subject: whole\r\n\r\nall of it\r\n")
    torn = spooled(f"{2:032x}", b"Subject: torn\r\n\r\nall of it\r\n")
    # Whole and checksummed, but its envelope names no recipients.
    broken = spooled(f"{3:032x}", b"Subject: broken\r\n\r\nall of it\r\n").replace(
        b'[["00000000000000000000000000000003",["rcpt@example.org"]]]', b"5"
    )
    header = broken.partition(b"\nEND ")[0]
    broken = header + f"\nEND {len(header)} {zlib.crc32(header):08x}\n".encode()
    (queue / f"{1:032x}").write_bytes(whole)
    (queue / f"{2:032x}").write_bytes(torn[: len(torn) // 2])
    (queue / f"{3:032x}").write_bytes(broken)

    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await handler.wait(1)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert [a.content for a in handler.arrivals] == [b"Subject: whole\r\n\r\nall of it\r\n"]
    assert (tmp_path / "spool" / "corrupt" / f"{2:032x}").read_bytes() == torn[: len(torn) // 2]
    assert (tmp_path / "spool" / "corrupt" / f"{3:032x}").read_bytes() == broken


async def test_stop_leaves_an_unfinished_delivery_spooled_for_the_next_start(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    hold = threading.Event()
    handler.hold = hold
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    first = await start_relay(config)
    await send(first.address.port, MESSAGE)
    await handler.wait(1, attempts=True)

    await first.queue.stop(grace=0.2)
    await first.stop()
    assert len(first.spool.ids()) == 1

    handler.hold = None
    try:
        await start_relay(config)
        await handler.wait(1)
        await events_of(store, delivery=1)
    finally:
        hold.set()


async def test_relays_sharing_a_spool_deliver_each_message_once(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    port = free_port()
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relays = [await start_relay(config), await start_relay(config)]
    count = 60

    async def submit(number: int) -> None:
        relay = relays[number % 2]
        message = MESSAGE.replace(b"Subject:", f"X-Seq: {number}\r\nSubject:".encode())
        await send(relay.address.port, message)

    await asyncio.gather(*(submit(n) for n in range(count)))
    await events_of(store, delivery_delay=count)
    handler, _ = await start_sink(port=port)

    await handler.wait(count)
    await until(lambda: relays[0].idle() and relays[1].idle(), "both relays done")
    numbers = sorted(
        int(a.content.split(b"X-Seq: ", 1)[1].split(b"\r\n", 1)[0]) for a in handler.arrivals
    )
    assert numbers == list(range(count))


async def test_queue_shows_the_spool_and_flush_retries_now(
    start_sink: SinkStarter,
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    text = config_text(f"smtp://127.0.0.1:{port}", tmp_path).replace(
        'retry_delays = ["200ms"]', 'retry_delays = ["1h"]'
    )
    config_file = tmp_path / "pixelpost.toml"
    config_file.write_text(text)
    from pixelpost.config import parse_config_text  # noqa: PLC0415

    relay = await start_relay(parse_config_text(text, environ={}))
    await send(relay.address.port, MESSAGE)
    await send(relay.address.port, MESSAGE)
    await events_of(store, delivery_delay=2)

    assert main(["queue", "-c", str(config_file)]) == 0
    shown = capsys.readouterr().out
    assert "messages    2 (0 due now, 2 deferred until a retry)" in shown
    assert "next retry" in shown
    span = re.search(r"\(in (?:(\d+)h ?)?(?:(\d+)m)?", shown)
    assert span is not None, shown
    minutes = int(span[1] or 0) * 60 + int(span[2] or 0)
    assert 53 <= minutes <= 66, shown  # an hour, give or take 10%
    assert "oldest      " in shown

    handler, _ = await start_sink(port=port)
    assert main(["queue", "flush", "-c", str(config_file)]) == 0
    assert "2 of them waiting for a retry" in capsys.readouterr().out

    await handler.wait(2)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert main(["queue", "--json", "-c", str(config_file)]) == 0
    assert '"messages": 0' in capsys.readouterr().out


def test_queue_without_a_spool_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "pixelpost.toml"
    config_file.write_text(f'[relay]\nspool = "{tmp_path / "none"}"\n')

    assert main(["queue", "-c", str(config_file)]) == 1
    assert "no spool at" in capsys.readouterr().err


async def test_metrics_show_the_queue_and_the_delivery_outcomes(
    start_sink: SinkStarter, start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    port = free_port()
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path)
    relay = await start_relay(config)
    metrics = Metrics()
    counts = functools.partial(spool_counts, config.relay.spool)

    async def scrape() -> str:
        await metrics.refresh(store, counts)
        return generate_latest(metrics.registry).decode()

    await send(relay.address.port, MESSAGE)
    await events_of(store, delivery_delay=1)
    text = await scrape()
    assert 'pixelpost_queue_messages{state="deferred"} 1.0' in text
    assert 'pixelpost_queue_messages{state="waiting"} 0.0' in text
    assert 'pixelpost_events_recorded_total{type="DeliveryDelay"} 1.0' in text

    handler, _ = await start_sink(port=port)
    await handler.wait(1)
    await events_of(store, delivery=1)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    text = await scrape()
    assert 'pixelpost_queue_messages{state="deferred"} 0.0' in text
    assert 'pixelpost_events_recorded_total{type="Delivery"} 1.0' in text


async def test_a_scan_leaves_a_message_just_accepted_to_the_process_that_accepted_it(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file another relay process just spooled is its to deliver, from memory and with
    its tracking planned; a scan takes it only once that process had its time."""
    monkeypatch.setattr("relay.outbound.scan.NEW_MESSAGE_GRACE", 3.0)
    handler, port = sink
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))
    message_id = new_message_id()
    envelope = Envelope(
        id=message_id,
        mail_from="sender@example.com",
        copies=(Copy(id=message_id, recipients=("rcpt@example.org",)),),
        received_at=time.time(),
        expires_at=time.time() + 3600,
    )
    (tmp_path / "spool" / "queue" / message_id).write_bytes(encode(envelope, MESSAGE))

    await handler.wait(1, within=15)
    assert time.time() - message_id_time(message_id) >= 3.0
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
