"""SNS-compatible destinations end to end on loopback: the real store's outbox, the
dispatcher, the tracker's /sns/ routes over https (trustme), and an endpoint written the
way AWS documents one (tests/sns_consumer.py), which fetches the certificate, checks
every signature and confirms by visiting the SubscribeURL. Then the endpoints that go
wrong: never confirming, 500s, redirects, hanging; and unsubscribing."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from pipeline.destinations import DELIVERED, Outcome, Sender, make_senders
from pipeline.destinations.sns import (
    CONFIRM_WITHIN,
    CONFIRMED_RECHECK,
    RESEND_FIRST,
    RESEND_MAX,
    SnsSender,
)
from pipeline.dispatch import Dispatcher
from pixelpost import __version__
from pixelpost.app.sns import new_key_and_certificate
from pixelpost.config import Config, SnsDestination, parse_config_text
from pixelpost.core.event_types import EventType
from pixelpost.core.events import open_event, send_event
from pixelpost.core.values import describe_url
from pixelpost.store import Claimed, MessageRecord, SQLiteStore
from tests.clock import Clock
from tests.conftest import until
from tests.sns_consumer import SnsConsumer, start_consumer
from tracker.sns import SnsViews, add_sns

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:mail-events"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sns")
    key_pem, certificate_pem = new_key_and_certificate(
        bits=2048, days=1, common_name="pixelpost-sns", now=datetime.now(UTC)
    )
    (folder / "key.pem").write_bytes(key_pem)
    (folder / "cert.pem").write_bytes(certificate_pem)
    return folder / "key.pem", folder / "cert.pem"


@pytest.fixture
async def tracker(
    store: SQLiteStore, keys: tuple[Path, Path], server_tls: ssl.SSLContext
) -> AsyncIterator[str]:
    """The tracker's /sns/ routes over https; its public URL."""
    app = web.Application()
    add_sns(app, SnsViews(subscriptions=store, certificate=keys[1].read_bytes()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def endpoint(tracker: str, ca: trustme.CA) -> AsyncIterator[tuple[SnsConsumer, str]]:
    """The consumer, trusting the tracker's CA and host; its URL."""
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    consumer = SnsConsumer(trusted_host=tracker.removeprefix("https://"), tls=tls)
    runner, port = await start_consumer(consumer)
    yield consumer, f"http://127.0.0.1:{port}/sns"
    if consumer.hold is not None:
        consumer.hold.set()
    await consumer.close()
    await runner.cleanup()


def config(
    keys: tuple[Path, Path],
    tracker: str,
    url: str,
    *,
    confirm: bool = True,
    version: str = "2",
    retry_delays: str = '["100ms", "100ms"]',
    timeout: str = "2s",
) -> Config:
    return parse_config_text(
        f"""
[tracker]
public_url = "{tracker}"

[sns]
key = "{keys[0]}"
certificate = "{keys[1]}"

[config_sets.marketing]
destinations = ["app"]

[destinations.app]
type = "sns"
url = "{url}"
topic_arn = "{TOPIC}"
events = ["send", "open"]
confirm = {str(confirm).lower()}
signature_version = "{version}"
retry_delays = {retry_delays}
timeout = "{timeout}"
""",
        environ={},
    )


async def record(store: SQLiteStore, count: int) -> list[str]:
    mail = json.dumps({"messageId": "m1", "tags": {"ses:configuration-set": ["marketing"]}})
    events = [send_event("m1", now=NOW)] + [
        open_event("m1", ip="192.0.2.1", user_agent="ua", now=NOW) for _ in range(count - 1)
    ]
    await store.record(
        messages=[MessageRecord(id="m1", config_set="marketing", created_at=NOW, mail=mail)],
        events=events,
    )
    return [e.id for e in events]


def claimed(event_id: str = "0123456789abcdef0123456789abcdef") -> Claimed:
    return Claimed(
        seq=1,
        event_id=event_id,
        event_type=EventType.OPEN,
        message_id="m1",
        config_set="marketing",
        attempts=0,
        body=b'{"eventType":"Open","mail":{"messageId":"m1"}}',
    )


def destination(cfg: Config) -> SnsDestination:
    found = cfg.destinations["app"]
    assert isinstance(found, SnsDestination)
    return found


class CountingSender(SnsSender):
    """The real sender, counting the batches offered to it."""

    calls = 0

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        self.calls += 1
        return await super().deliver(batch)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
async def dispatching() -> AsyncIterator[list[Dispatcher]]:
    running: list[Dispatcher] = []
    yield running
    for dispatcher in running:
        await dispatcher.stop(grace=0)


def start(
    running: list[Dispatcher], cfg: Config, store: SQLiteStore, senders: dict[str, Sender]
) -> None:
    dispatcher = Dispatcher(config=cfg, store=store, senders=senders)
    dispatcher.start()
    dispatcher.wake()
    running.append(dispatcher)


async def test_events_wait_uncounted_for_the_confirmation_then_all_arrive(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    consumer, url = endpoint
    consumer.confirm = False  # it will, later
    ids = await record(store, 3)
    cfg = config(keys, tracker, url)
    sender = CountingSender(
        destination(cfg),
        config=cfg,
        session=session,
        store=store,
        pending_pause=0.05,
        recheck=0.02,
    )
    start(dispatching, cfg, store, {"app": sender})

    await until(lambda: sender.calls >= 8, "the events offered again and again")
    # One confirmation, no notification; one retry would have made dead letters had the
    # waits been counted as attempts.
    [confirmation] = consumer.received
    assert confirmation.verified
    assert confirmation.message["Type"] == "SubscriptionConfirmation"
    assert confirmation.message["TopicArn"] == TOPIC
    assert confirmation.headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert await store.dead_letters() == []
    assert await store.outbox_depth() == {"app": 3}
    subscription = await store.sns_subscription("app")
    assert subscription is not None
    assert subscription.state == "pending"
    assert subscription.arn.startswith(f"{TOPIC}:")
    assert confirmation.message["Token"] == subscription.token
    assert (
        f"destination app: SubscriptionConfirmation sent to {url}; events wait until the "
        "endpoint visits its SubscribeURL" in caplog.text
    )
    assert "dispatch app: unavailable: waiting for the endpoint" in caplog.text

    assert await consumer.visit(confirmation.message["SubscribeURL"]) == 200
    await until(lambda: len(consumer.notifications) == 3, "every event delivered")
    assert all(n.verified for n in consumer.notifications)
    assert sorted(n.message["MessageId"] for n in consumer.notifications) == sorted(ids)

    async def empty() -> bool:
        return await store.outbox_depth() == {}

    await until(empty, "the outbox emptied")
    assert await store.dead_letters() == []
    assert "dispatch app: available again" in caplog.text


@pytest.mark.parametrize("version", ["1", "2"])
async def test_an_endpoint_that_confirms_at_once_gets_every_event_signed(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
    version: str,
) -> None:
    consumer, url = endpoint
    ids = await record(store, 3)
    cfg = config(keys, tracker, url, version=version)
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    await until(lambda: len(consumer.notifications) == 3, "every event delivered")
    first, *notifications = consumer.received
    assert first.message["Type"] == "SubscriptionConfirmation"
    assert consumer.confirmations_visited == [200]
    assert len(notifications) == 3
    subscription = await store.sns_subscription("app")
    assert subscription is not None
    assert subscription.state == "confirmed"
    by_id = {n.message["MessageId"]: n for n in notifications}
    assert sorted(by_id) == sorted(ids)
    for event_id, received in by_id.items():
        message, headers = received.message, received.headers
        assert received.verified
        assert message["SignatureVersion"] == version
        assert message["TopicArn"] == TOPIC
        assert message["SigningCertURL"].startswith(f"{tracker}/sns/SimpleNotificationService-")
        assert message["UnsubscribeURL"].startswith(f"{tracker}/sns/unsubscribe?")
        event = json.loads(message["Message"])
        assert event["mail"]["messageId"] == "m1"
        assert headers["x-amz-sns-message-type"] == "Notification"
        assert headers["x-amz-sns-message-id"] == event_id
        assert headers["x-amz-sns-topic-arn"] == TOPIC
        assert headers["x-amz-sns-subscription-arn"] == subscription.arn
        assert headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert headers["User-Agent"] == f"pixelpost/{__version__}"


async def test_without_confirmation_events_go_at_once(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
) -> None:
    consumer, url = endpoint
    ids = await record(store, 2)
    cfg = config(keys, tracker, url, confirm=False, version="1")
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    await until(lambda: len(consumer.notifications) == 2, "both events delivered")
    assert consumer.confirmations == []
    assert all(n.verified and n.message["SignatureVersion"] == "1" for n in consumer.received)
    assert sorted(n.message["MessageId"] for n in consumer.received) == sorted(ids)
    subscription = await store.sns_subscription("app")
    assert subscription is not None
    assert subscription.state == "confirmed"


async def test_a_retried_notification_keeps_its_message_id(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
) -> None:
    consumer, url = endpoint
    consumer.status = 503
    [event_id] = await record(store, 1)
    cfg = config(keys, tracker, url, confirm=False)
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    await until(lambda: len(consumer.notifications) == 1, "the first attempt")
    consumer.status = 200
    await until(lambda: len(consumer.notifications) == 2, "the retry")
    first, second = consumer.notifications
    assert first.message["MessageId"] == second.message["MessageId"] == event_id
    assert first.message["Message"] == second.message["Message"]
    assert second.verified


async def test_an_endpoint_answering_500_gets_retries_then_dead_letters(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, url = endpoint
    consumer.status = 500
    [event_id] = await record(store, 1)
    cfg = config(keys, tracker, url, confirm=False, retry_delays='["100ms"]')
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    letters = await until(store.dead_letters, "a dead letter")
    assert len(consumer.notifications) == 2  # the first attempt and the one retry
    assert {n.message["MessageId"] for n in consumer.notifications} == {event_id}
    [letter] = letters
    assert letter.attempts == 2
    assert letter.last_error == "HTTP 500 Internal Server Error: consumer says no"
    assert (
        f"dispatch app: event {event_id} failed (attempt 1): HTTP 500 Internal Server Error"
        in caplog.text
    )
    assert f"dispatch app: event {event_id} (Send of m1) failed 2 times" in caplog.text


async def test_a_redirect_is_a_failure_and_is_not_followed(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, url = endpoint
    elsewhere = url.replace("/sns", "/elsewhere")
    consumer.redirect_to = elsewhere
    await record(store, 1)
    cfg = config(keys, tracker, url, confirm=False, retry_delays='["100ms"]')
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    [letter] = await until(store.dead_letters, "a dead letter")
    assert letter.last_error == f"HTTP 302 Found to {elsewhere!r} (redirects are not followed)"
    assert consumer.redirected == 0
    assert "dispatch app: event" in caplog.text
    assert "(redirects are not followed)" in caplog.text


async def test_an_endpoint_that_hangs_times_out(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    dispatching: list[Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, url = endpoint
    consumer.hold = asyncio.Event()
    [event_id] = await record(store, 1)
    cfg = config(keys, tracker, url, confirm=False, retry_delays='["100ms"]', timeout="200ms")
    start(dispatching, cfg, store, make_senders(cfg, session=session, store=store))

    [letter] = await until(store.dead_letters, "a dead letter")
    assert letter.last_error == "no answer within 0.2s"
    assert letter.attempts == 2
    assert f"dispatch app: event {event_id} failed (attempt 1): no answer within 0.2s" in (
        caplog.text
    )


async def test_a_confirmation_is_sent_again_on_a_bounded_backoff(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, url = endpoint
    consumer.status = 500  # the first confirmation fails; the endpoint then never confirms
    consumer.confirm = False
    cfg = config(keys, tracker, url)
    clock = Clock()
    start_at = clock.now
    sender = SnsSender(destination(cfg), config=cfg, session=session, store=store, clock=clock)

    [outcome] = await sender.deliver([claimed()])
    assert outcome.unavailable
    assert outcome.retry_after == 2.0
    assert "waiting for the endpoint" in outcome.error
    assert len(consumer.confirmations) == 1
    assert (
        f"destination app: SubscriptionConfirmation to {url} failed: HTTP 500 Internal "
        "Server Error: consumer says no; sent again in 60s" in caplog.text
    )
    consumer.status = 200

    sent_at = [0.0]
    four_hours = 4 * 3600
    while clock.now - start_at < four_hours:
        clock.now += 30
        [outcome] = await sender.deliver([claimed()])
        assert outcome.unavailable
        if len(consumer.confirmations) > len(sent_at):
            sent_at.append(clock.now - start_at)
    # 60 s, then doubling, then hourly: at most a few a day however long it waits.
    assert sent_at == [0, 60, 180, 420, 900, 1860, 3780, 7380, 10980]
    assert sent_at[1] == RESEND_FIRST
    assert sent_at[-1] - sent_at[-2] == RESEND_MAX
    assert consumer.notifications == []
    assert len({c.message["MessageId"] for c in consumer.confirmations}) == 1
    assert all(c.verified for c in consumer.confirmations)


async def test_a_subscription_not_confirmed_in_three_days_ends_until_a_replay(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
) -> None:
    consumer, url = endpoint
    consumer.confirm = False  # it takes the confirmation, and never visits the URL
    cfg = config(keys, tracker, url)
    clock = Clock()
    sender = SnsSender(destination(cfg), config=cfg, session=session, store=store, clock=clock)
    [outcome] = await sender.deliver([claimed()])
    assert outcome.unavailable

    clock.now += CONFIRM_WITHIN - 60
    [outcome] = await sender.deliver([claimed()])
    assert outcome.unavailable  # still waiting on the third day
    clock.now += 120
    [outcome] = await sender.deliver([claimed()])
    assert outcome.gone
    ended = await store.sns_subscription("app")
    assert ended is not None
    assert ended.state == "unsubscribed"
    assert outcome.error.startswith(
        f"the endpoint {describe_url(url)} did not confirm subscription {ended.arn} within 3 days"
    )
    assert "`pixelpost events replay --destination app`" in outcome.error
    # Its SubscribeURL no longer confirms anything.
    late = consumer.confirmations[0].message["SubscribeURL"]
    assert await consumer.visit(late) == 404

    await store.replay("app")
    clock.now += 2
    [outcome] = await sender.deliver([claimed()])
    assert outcome.unavailable  # a new handshake
    again = await store.sns_subscription("app")
    assert again is not None
    assert (again.state, again.arn != ended.arn) == ("pending", True)
    assert len(consumer.confirmations) >= 2


async def test_an_unsubscribe_stops_the_destination_until_a_replay(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
) -> None:
    consumer, url = endpoint
    cfg = config(keys, tracker, url)
    clock = Clock()
    sender = SnsSender(destination(cfg), config=cfg, session=session, store=store, clock=clock)

    assert await sender.deliver([claimed()]) == [DELIVERED]
    [notification] = consumer.notifications
    first = await store.sns_subscription("app")
    assert first is not None
    assert await consumer.visit(notification.message["UnsubscribeURL"]) == 200

    clock.now += CONFIRMED_RECHECK
    [outcome] = await sender.deliver([claimed()])
    assert outcome.gone
    assert outcome.error.startswith("the endpoint unsubscribed (visited the UnsubscribeURL")
    assert "`pixelpost events replay --destination app`" in outcome.error
    assert len(consumer.notifications) == 1

    await store.replay("app")
    clock.now += 2
    assert await sender.deliver([claimed()]) == [DELIVERED]
    again = await store.sns_subscription("app")
    assert again is not None
    assert again.arn != first.arn
    assert again.state == "confirmed"
    assert len(consumer.confirmations) == 2
    assert consumer.notifications[-1].headers["x-amz-sns-subscription-arn"] == again.arn


async def test_a_changed_endpoint_is_subscribed_anew(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    consumer, url = endpoint
    old = config(keys, tracker, url, confirm=False)
    sender = SnsSender(destination(old), config=old, session=session, store=store)
    assert await sender.deliver([claimed()]) == [DELIVERED]
    before = await store.sns_subscription("app")
    assert before is not None

    moved = config(keys, tracker, f"{url}?v=2")
    sender = SnsSender(destination(moved), config=moved, session=session, store=store)
    assert await sender.deliver([claimed()]) == [DELIVERED]  # confirmed on the way
    [after] = await store.sns_subscriptions()
    assert after.endpoint == f"{url}?v=2"
    assert after.arn != before.arn
    assert after.state == "confirmed"
    assert len(consumer.confirmations) == 1
    assert f"in place of {before.arn}" in caplog.text


async def test_two_dispatchers_make_one_subscription_and_one_confirmation(
    store: SQLiteStore,
    keys: tuple[Path, Path],
    tracker: str,
    endpoint: tuple[SnsConsumer, str],
    session: aiohttp.ClientSession,
) -> None:
    consumer, url = endpoint
    consumer.confirm = False
    cfg = config(keys, tracker, url)
    one, other = (
        SnsSender(destination(cfg), config=cfg, session=session, store=store) for _ in range(2)
    )
    outcomes = await asyncio.gather(one.deliver([claimed()]), other.deliver([claimed()]))
    assert all(outcome.unavailable for [outcome] in outcomes)
    assert len(await store.sns_subscriptions()) == 1
    assert len(consumer.confirmations) == 1
