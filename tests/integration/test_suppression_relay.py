"""The suppression list on the send path: a copy for a suppressed recipient is not
sent; a Bounce with OnAccountSuppressionList says so, and the other recipients go on.
Real relays, a real aiosmtpd upstream and the real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store import SQLiteStore
from relay.outbound import attempt
from tests.conftest import RelayStarter, events_of, make_config, published, until
from tests.integration.test_delivery import THREE, details, notifications
from tests.integration.test_relay_passthrough import MESSAGE
from tests.integration.test_relay_passthrough import send as send_plain
from tests.integration.test_tracking_relay import newsletter
from tests.integration.test_tracking_relay import send as send_tracked
from tests.sink import SinkHandler


async def suppress(store: SQLiteStore, address: str) -> None:
    await store.suppress(
        [Suppressed(address=address, reason=Reason.BOUNCE, created_at=datetime.now(UTC))]
    )


async def test_one_copy_for_three_skips_the_suppressed_one_without_a_notification(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    await suppress(store, "gone@example.org")
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    rcpts = ["a@example.org", "Gone@Example.ORG", "b@example.org"]  # the list ignores case
    assert "queued as" in await send_plain(relay.address.port, MESSAGE, rcpts=rcpts)

    events = await events_of(store, delivery=1, bounce=1)
    [delivery] = details(events, "delivery")
    assert sorted(delivery["recipients"]) == ["a@example.org", "b@example.org"]
    [bounce] = details(events, "bounce")
    assert (bounce["bounceType"], bounce["bounceSubType"]) == (
        "Permanent",
        "OnAccountSuppressionList",
    )
    [bounced] = bounce["bouncedRecipients"]
    assert bounced["emailAddress"] == "Gone@Example.ORG"  # as the mailer wrote it
    assert bounced["status"] == "5.7.1"
    assert "suppression list" in bounced["diagnosticCode"]
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    [arrival] = handler.arrivals
    assert sorted(arrival.rcpt_tos) == ["a@example.org", "b@example.org"]
    assert notifications(handler) == []  # the sender's own list: no DSN to it
    [bounce_json] = [e for e in await published(store) if e["eventType"] == "Bounce"]
    assert "Gone@Example.ORG" in bounce_json["mail"]["destination"]


async def test_a_tracked_message_sends_no_copy_to_a_suppressed_recipient(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    handler, port = sink
    await suppress(store, "b@example.org")
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    await send_tracked(
        relay.address.port, newsletter(config_set="marketing"), ["a@example.org", "b@example.org"]
    )

    events = await events_of(store, send=2, delivery=1, bounce=1)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert [arrival.rcpt_tos for arrival in handler.arrivals] == [["a@example.org"]]
    by_copy: dict[str, list[str]] = {}
    for kind, message_id, _ in events:
        by_copy.setdefault(message_id, []).append(kind)
    assert sorted(by_copy.values()) == [["send", "bounce"], ["send", "delivery"]]
    [bounce] = [e for e in await published(store) if e["eventType"] == "Bounce"]
    assert bounce["mail"]["destination"] == ["b@example.org"]
    assert bounce["mail"]["tags"]["campaign"] == ["welcome"]
    assert bounce["bounce"]["bounceSubType"] == "OnAccountSuppressionList"


async def test_an_address_suppressed_while_its_message_waits_is_not_sent_to(
    sink: tuple[SinkHandler, int], start_relay: RelayStarter, tmp_path: Path, store: SQLiteStore
) -> None:
    """The list is read at every attempt: a recipient deferred first and suppressed
    before the retry is bounced, not delivered; the one that was delivered stays so."""
    handler, port = sink
    handler.rcpt_replies["gone@example.org"] = "451 4.3.0 try later"
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    assert "queued as" in await send_plain(relay.address.port, MESSAGE, rcpts=THREE)
    await events_of(store, delivery=1, delivery_delay=1)
    await suppress(store, "gone@example.org")
    del handler.rcpt_replies["gone@example.org"]

    events = await events_of(store, bounce=1)
    await until(lambda: relay.spool.ids() == [], "the spool emptied")
    assert [kind for kind, _, _ in events] == ["send", "delivery", "delivery_delay", "bounce"]
    assert [arrival.rcpt_tos for arrival in handler.arrivals] == [
        ["a@example.org", "b@example.org"]
    ]


async def test_mail_waits_in_the_spool_while_the_list_cannot_be_read(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The list's lookup fails (its table is gone): the message is taken, nothing is
    sent to anyone (a suppressed address among them must not get it), the log says why;
    once the list reads again, it goes out, with no DeliveryDelay for the wait."""
    monkeypatch.setattr(attempt, "STORE_WAIT", 0.2)
    handler, port = sink
    with sqlite3.connect(store.path) as connection:
        connection.execute("ALTER TABLE suppression RENAME TO suppression_away")
    relay = await start_relay(make_config(f"smtp://127.0.0.1:{port}", tmp_path))

    assert "queued as" in await send_plain(relay.address.port, MESSAGE, rcpts=THREE)

    line = await until(
        lambda: next((r for r in caplog.records if "waits in the spool" in r.getMessage()), None),
        "the line that says why the message waits",
    )
    assert line.levelno == logging.ERROR
    assert "no such table: suppression" in line.getMessage()
    await asyncio.sleep(1.0)  # several tries of the list meanwhile
    assert handler.arrivals == []
    assert len(relay.spool.ids()) == 1

    with sqlite3.connect(store.path) as connection:
        connection.execute("ALTER TABLE suppression_away RENAME TO suppression")
    events = await events_of(store, delivery=1)
    [arrival] = handler.arrivals
    assert sorted(arrival.rcpt_tos) == sorted(THREE)
    assert [kind for kind, _, _ in events] == ["send", "delivery"]
