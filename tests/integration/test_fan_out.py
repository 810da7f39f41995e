"""One message to many recipients: spooled once, its copies made one by one as they go
out, each with its own id, tokens and Received line; outcomes per copy, in rounds
(relay.outbound.attempt.ROUND_COPIES), with one notification per round for what bounced."""

from __future__ import annotations

import re
import threading
from email import message_from_bytes, policy
from pathlib import Path

from pixelpost.store import SQLiteStore
from relay.outbound.attempt import ROUND_COPIES
from tests.conftest import RelayStarter, codec_for, events_of, make_config, published, until
from tests.integration.test_delivery import notifications
from tests.integration.test_tracking_relay import send
from tests.sink import SinkHandler

HTML = (
    "<html><body><p>Spring sale</p>"
    + "".join(
        f'<a href="https://shop.example/item/{n}?a=1&amp;b=2">item {n}</a>' for n in range(20)
    )
    + "</body></html>"
)
MESSAGE = (
    "From: News <news@example.com>\r\nTo: list@example.com\r\nSubject: Sale\r\n"
    "X-Config-Set: marketing\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/html; charset=utf-8\r\n\r\n" + HTML + "\r\n"
).encode()


async def test_a_message_to_many_recipients_is_spooled_once_and_tracked_per_copy(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    handler.hold = hold = threading.Event()
    config = make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay="max_recipients = 1000")
    relay = await start_relay(config)
    recipients = [f"reader{n}@example.org" for n in range(ROUND_COPIES * 2 + 50)]

    reply = await send(relay.address.port, MESSAGE, recipients)
    queue_id = reply.split()[-1]

    # Accepted: one spool file, the message once and a small record per recipient.
    [spooled] = list((tmp_path / "spool" / "queue").iterdir())
    assert spooled.name == queue_id
    assert spooled.stat().st_size < len(MESSAGE) + 120 * len(recipients) + 4096
    hold.set()

    await handler.wait(len(recipients), within=30)
    codec = codec_for(config)
    ids = set()
    for arrival in handler.arrivals:
        [rcpt] = arrival.rcpt_tos
        head, _, _ = arrival.content.partition(b"\r\n\r\n")
        [received_id] = re.findall(rb"with ESMTP id ([0-9a-f]{32})", head)
        assert f"for <{rcpt}>;".encode() in head
        html = message_from_bytes(arrival.content, policy=policy.default).get_content()
        [pixel] = re.findall(r'src="https://t\.example/o/([^"]+)"', html)
        message_id = codec.read_open(pixel).message_id
        assert message_id == received_id.decode()
        clicks = re.findall(r'href="https://t\.example/c/([^"]+)"', html)
        assert len(clicks) == 20
        assert {codec.read_click(c.replace("&amp;", "&")).message_id for c in clicks} == {
            message_id
        }
        ids.add(message_id)
    assert len(ids) == len(recipients)
    assert queue_id in ids  # the queue id is the first copy's

    events = await events_of(store, send=len(recipients), delivery=len(recipients))
    assert {message_id for kind, message_id, _ in events if kind == "delivery"} == ids
    deliveries = [e for e in await published(store) if e["eventType"] == "Delivery"]
    for event in deliveries:
        assert event["mail"]["destination"] == event["delivery"]["recipients"]
        assert event["mail"]["commonHeaders"]["messageId"] == event["mail"]["messageId"]
        assert event["mail"]["commonHeaders"]["subject"] == "Sale"
    await until(lambda: relay.spool.ids() == [], "the spool emptied")


async def test_outcomes_are_per_copy_and_each_round_notifies_its_bounces(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    count = ROUND_COPIES + 30
    recipients = [f"reader{n}@example.org" for n in range(count)]
    gone = recipients[5::40]  # in both rounds
    later = recipients[7::50]
    for rcpt in gone:
        handler.rcpt_replies[rcpt] = "550 5.1.1 No such user"
    for rcpt in later:
        handler.rcpt_replies[rcpt] = "451 4.2.0 Try again later"
    relay = await start_relay(
        make_config(f"smtp://127.0.0.1:{port}", tmp_path, relay="max_recipients = 1000")
    )

    await send(relay.address.port, MESSAGE, recipients)
    delivered = count - len(gone) - len(later)
    await handler.wait(delivered + 2, within=30)  # and the two rounds' notifications
    events = await events_of(
        store, send=count, delivery=delivered, bounce=len(gone), delivery_delay=len(later)
    )
    bounced = [d["bouncedRecipients"][0]["emailAddress"] for k, _, d in events if k == "bounce"]
    assert sorted(bounced) == sorted(gone)
    reports = notifications(handler)
    assert len(reports) == 2  # one per round that bounced something
    listed = [
        line.split(";", 1)[1].strip()
        for _, report in reports
        for line in report.as_string().splitlines()
        if line.startswith("Final-Recipient:")
    ]
    assert sorted(listed) == sorted(gone)

    # Only the deferred are tried again; once the upstream takes them, the file is gone.
    for rcpt in later:
        del handler.rcpt_replies[rcpt]
    await handler.wait(delivered + 2 + len(later), within=30)
    await until(relay.idle, "the relay done with the message")  # so nothing more comes
    counted = [r for a in handler.arrivals for r in a.rcpt_tos if a.mail_from != "<>"]
    assert sorted(counted) == sorted(set(recipients) - set(gone))
    events = await events_of(store, delivery=delivered + len(later))
    assert sum(1 for kind, _, _ in events if kind == "send") == count
    assert sum(1 for kind, _, _ in events if kind == "delivery_delay") == len(later)
