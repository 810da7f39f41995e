"""The broker destinations against real brokers on 127.0.0.1 (tests/brokers.py): NATS
JetStream, Redis streams and RabbitMQ, through the dispatcher and the real SQLite store,
read back by real consumers; an event sent twice, a broker unreachable or refusing the
credentials, an unroutable event, a stream that does not take the subject, trimming."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

import aiohttp
import nats
import pytest

from pipeline.destinations import make_senders
from pipeline.destinations.amqp import AmqpSender
from pipeline.destinations.base import DELIVERED
from pipeline.destinations.nats import DUPLICATE_WINDOW, NatsSender
from pipeline.destinations.redis import RedisSender
from pipeline.dispatch import Dispatcher
from pixelpost.config import (
    AmqpDestination,
    Config,
    NatsDestination,
    RedisDestination,
    parse_config_text,
)
from pixelpost.core.event_types import EventType
from pixelpost.core.events import open_event, send_event
from pixelpost.store import Claimed, DeadLetter, MessageRecord, Route, SQLiteStore
from pixelpost.store.sqlite.store import outbox_path
from tests.brokers import (
    AMQP_URL,
    NATS_URL,
    REDIS_URL,
    AmqpBroker,
    Broker,
    NatsBroker,
    Received,
    RedisBroker,
    make_broker,
    unique,
)
from tests.clock import Clock
from tests.conftest import until
from tests.net import free_port
from tests.tcpproxy import tcp_proxy

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KINDS = ["nats", "redis", "amqp"]
ALL_TYPES = frozenset(EventType)


def config(broker: Broker, *, url: str | None = None, retry_delays: str = '["1s"]') -> Config:
    """The configuration set `marketing` publishing every event to the broker's
    destination `bus`."""
    return parse_config_text(
        f"""
[config_sets.marketing]
destinations = ["bus"]

[destinations.bus]
{broker.section(url)}timeout = "2s"
retry_delays = {retry_delays}
""",
        environ={},
    )


async def record(store: SQLiteStore, count: int) -> dict[str, Claimed]:
    """`count` events of message m1 (a send, then opens), routed to `bus`; returns them
    as a destination gets them, by id (routed to a witness that nothing delivers)."""
    mail = json.dumps({"messageId": "m1", "tags": {"ses:configuration-set": ["marketing"]}})
    events = [send_event("m1", now=NOW)] + [
        open_event("m1", ip="192.0.2.1", user_agent="ua", now=NOW) for _ in range(count - 1)
    ]
    await store.record(
        messages=[MessageRecord(id="m1", config_set="marketing", created_at=NOW, mail=mail)],
        events=events,
    )
    await store.route(
        [
            Route(config_set="marketing", event_type=t, destination=name)
            for name in ("bus", "witness")
            for t in EventType
        ]
    )
    claimed = await store.claim("witness", limit=10_000, lease=3600)
    assert len(claimed) == count
    return {c.event_id: c for c in claimed}


T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """What `check` returns once it is true (conftest's `until`, for an async check,
    typed so that mypy follows what it returns)."""
    return cast(T, await until(check, what))


DispatcherStarter = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def start_dispatcher() -> AsyncIterator[DispatcherStarter]:
    running: list[tuple[Dispatcher, aiohttp.ClientSession]] = []

    async def start(cfg: Config, store: SQLiteStore, clock: Clock | None = None) -> Dispatcher:
        session = aiohttp.ClientSession()
        dispatcher = Dispatcher(
            config=cfg,
            store=store,
            senders=make_senders(cfg, session=session, store=store),
            clock=clock or time.time,
        )
        dispatcher.start()
        dispatcher.wake()
        running.append((dispatcher, session))
        return dispatcher

    yield start
    for dispatcher, session in running:
        await dispatcher.stop(grace=0)
        await session.close()


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    found = make_broker(request.param)
    if isinstance(found, AmqpBroker):
        await found.bind()
    yield found
    await found.cleanup()


async def received(broker: Broker, count: int) -> list[Received]:
    async def enough() -> list[Received] | None:
        found = await broker.received()
        return found if len(found) >= count else None

    return await eventually(enough, f"{count} messages on {broker.kind}")


def deliveries(store: SQLiteStore) -> list[tuple[int, str]]:
    """The outbox's deliveries to `bus`: (attempts, last error)."""
    with sqlite3.connect(outbox_path(store.path)) as connection:
        rows = connection.execute(
            "SELECT attempts, last_error FROM deliveries WHERE destination = 'bus'"
        )
        return [(attempts, error or "") for attempts, error in rows]


async def test_every_event_reaches_the_broker_through_the_dispatcher(
    store: SQLiteStore, broker: Broker, start_dispatcher: DispatcherStarter
) -> None:
    events = await record(store, 5)
    await start_dispatcher(config(broker), store)

    found = await received(broker, 5)
    assert sorted(r.id for r in found) == sorted(events)
    for message in found:
        claimed = events[message.id]
        assert message.body == claimed.body  # the SES JSON, byte for byte
        kind = claimed.event_type.config_name
        if isinstance(broker, NatsBroker):
            assert message.route == f"{broker.prefix}.marketing.{kind}"
            assert message.properties["Nats-Msg-Id"] == claimed.event_id
        elif isinstance(broker, RedisBroker):
            assert set(message.properties) == {"id", "event"}
        else:
            assert message.route == f"marketing.{kind}"
            assert message.properties == {
                "content_type": "application/json",
                "type": claimed.event_type.value,  # the SES eventType: "Open"
                "delivery_mode": "2",  # persistent
            }
    assert {json.loads(r.body)["eventType"] for r in found} == {"Send", "Open"}

    async def counted() -> bool:
        counts = (await store.counts())["bus"]
        return (counts.delivered, counts.pending, counts.failed) == (5, 0, 0)

    await eventually(counted, "five deliveries counted")


async def test_the_nats_stream_is_created_taking_the_subjects(store: SQLiteStore) -> None:
    broker = NatsBroker()
    sender = NatsSender(
        NatsDestination(name="bus", events=ALL_TYPES, stream=broker.stream, subject=broker.subject)
    )
    try:
        events = await record(store, 2)
        assert await sender.deliver(list(events.values())) == [DELIVERED] * 2

        client = await nats.connect(NATS_URL)
        info = await client.jetstream().stream_info(broker.stream)
        await client.close()
        assert info.config.subjects == [f"{broker.prefix}.*.*"]
        assert info.config.duplicate_window == DUPLICATE_WINDOW
        assert info.state.messages == 2
    finally:
        await sender.close()
        await broker.cleanup()


@pytest.mark.parametrize(("kind", "copies"), [("nats", 1), ("redis", 2), ("amqp", 2)])
async def test_an_event_sent_twice(store: SQLiteStore, kind: str, copies: int) -> None:
    """At least once means twice, now and then: JetStream keeps one copy (the stream
    deduplicates on Nats-Msg-Id); Redis and RabbitMQ pass both on, with the same id for
    the consumer to tell them apart by."""
    broker = make_broker(kind)
    if isinstance(broker, AmqpBroker):
        await broker.bind()
    sender = sender_for(broker)
    try:
        [claimed] = (await record(store, 1)).values()
        assert await sender.deliver([claimed]) == [DELIVERED]
        assert await sender.deliver([claimed]) == [DELIVERED]  # its claim lapsed, say

        found = await received(broker, copies)
        assert [r.id for r in found] == [claimed.event_id] * copies
        assert all(r.body == claimed.body for r in found)
    finally:
        await sender.close()
        await broker.cleanup()


def sender_for(
    broker: Broker, url: str | None = None, *, timeout: float = 2.0
) -> NatsSender | RedisSender | AmqpSender:
    """The sender of a destination `bus` publishing to the broker's names."""
    if isinstance(broker, NatsBroker):
        return NatsSender(
            NatsDestination(
                name="bus",
                events=ALL_TYPES,
                url=url or NATS_URL,
                stream=broker.stream,
                subject=broker.subject,
                timeout=timeout,
            )
        )
    if isinstance(broker, RedisBroker):
        return RedisSender(
            RedisDestination(
                name="bus",
                events=ALL_TYPES,
                url=url or REDIS_URL,
                stream=broker.stream,
                maxlen=broker.maxlen,
                timeout=timeout,
            )
        )
    assert isinstance(broker, AmqpBroker)
    return AmqpSender(
        AmqpDestination(
            name="bus",
            events=ALL_TYPES,
            url=url or AMQP_URL,
            exchange=broker.exchange,
            timeout=timeout,
        )
    )


def url_at(kind: str, port: int) -> str:
    return {
        "nats": f"nats://127.0.0.1:{port}",
        "redis": f"redis://127.0.0.1:{port}/0",
        "amqp": f"amqp://guest:guest@127.0.0.1:{port}/",
    }[kind]


async def test_an_unreachable_broker_keeps_the_events_until_it_is_back(
    tmp_path: Path,
    broker: Broker,
    start_dispatcher: DispatcherStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = await SQLiteStore.open(tmp_path / "outage.db", clock=clock)
    try:
        events = await record(store, 3)
        wrong = url_at(broker.kind, free_port())
        first = await start_dispatcher(config(broker, url=wrong), store, clock)

        async def failed_once() -> bool:
            return (await store.counts())["bus"].failed == 3

        await eventually(failed_once, "three failures counted")
        await first.stop(grace=0)
        counts = (await store.counts())["bus"]
        assert (counts.pending, counts.dead, counts.delivered) == (3, 0, 0)
        shown = wrong.replace("guest:guest@", "guest@")
        waiting = deliveries(store)
        assert len(waiting) == 3
        for attempts, error in waiting:  # uncounted, and said without the password
            assert attempts == 0
            assert error.startswith(("cannot connect to ", "cannot reach ")), error
            assert shown in error
        unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(unavailable) == 1  # said once for the outage, not once per event
        assert await broker.received() == []

        clock.now += 60  # the events are due again; the broker is back (the right port)
        await start_dispatcher(config(broker), store, clock)

        found = await received(broker, 3)
        assert sorted(r.id for r in found) == sorted(events)

        async def all_delivered() -> bool:
            counts = (await store.counts())["bus"]
            return (counts.delivered, counts.pending, counts.dead) == (3, 0, 0)

        await eventually(all_delivered, "all three delivered")
    finally:
        await store.close()


PORTS = {"nats": 4222, "redis": 6379, "amqp": 5672}


async def test_a_lost_connection_is_made_again_after_a_growing_pause(
    store: SQLiteStore, broker: Broker
) -> None:
    events = list((await record(store, 4)).values())
    with tcp_proxy(PORTS[broker.kind]) as proxy:
        sender = sender_for(broker, url_at(broker.kind, proxy.port), timeout=1.0)
        try:
            assert await sender.deliver(events[:1]) == [DELIVERED]

            proxy.down()  # the open connection is cut, new ones refused
            first = await sender.deliver(events[1:3])
            second = await sender.deliver(events[1:3])
            proxy.up()
            assert await sender.deliver(events[1:3]) == [DELIVERED] * 2
            proxy.down()
            after = await sender.deliver(events[3:])
            proxy.up()
            assert await sender.deliver(events[3:]) == [DELIVERED]
        finally:
            await sender.close()

    for outcomes in (first, second, after):
        assert all(o.unavailable and not o.delivered for o in outcomes)
        assert len({o.retry_after for o in outcomes}) == 1  # one pause for the batch
    # 1 s, then 2 s (give or take a fifth), and 1 s again once a batch got through.
    assert [o[0].retry_after for o in (first, second, after)] == [
        pytest.approx(1, rel=0.21),
        pytest.approx(2, rel=0.21),
        pytest.approx(1, rel=0.21),
    ]
    found = await received(broker, 4)
    assert sorted(r.id for r in found) == sorted(e.event_id for e in events)


@pytest.mark.parametrize(
    ("kind", "url", "refusal"),
    [
        ("redis", "redis://pixelpost-nobody:{secret}@127.0.0.1:6379/0", "refused the credentials"),
        ("amqp", "amqp://guest:{secret}@127.0.0.1:5672/", "refused the login: ACCESS_REFUSED"),
    ],
)
async def test_bad_credentials_make_the_broker_unavailable_and_never_show_the_password(
    store: SQLiteStore,
    start_dispatcher: DispatcherStarter,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    url: str,
    refusal: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = unique("pw")
    broker = make_broker(kind)
    try:
        await record(store, 2)
        await start_dispatcher(config(broker, url=url.format(secret=secret)), store)

        async def failed() -> bool:
            return (await store.counts())["bus"].failed == 2

        await eventually(failed, "both events failed to reach the broker")
        shown = url.format(secret="").replace(":@", "@")  # the user, not the password
        waiting = deliveries(store)
        assert [attempts for attempts, _ in waiting] == [0, 0]  # no attempt counted
        [error] = {error for _, error in waiting}
        assert error.startswith(f"{shown} {refusal}"), error
        [line] = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert line.startswith(f"dispatch bus: unavailable: {shown} {refusal}")
        for entry in caplog.records:
            assert secret not in entry.getMessage()
            assert secret not in (entry.exc_text or "")
        assert secret not in caplog.text
        assert (await store.counts())["bus"].dead == 0
    finally:
        await broker.cleanup()


async def test_an_event_no_queue_is_bound_for_fails_and_says_why(
    store: SQLiteStore, start_dispatcher: DispatcherStarter
) -> None:
    broker = AmqpBroker()  # nothing bound: the sender declares the exchange, no queue
    try:
        [event_id] = await record(store, 1)
        await start_dispatcher(config(broker, retry_delays='["100ms"]'), store)

        async def dead() -> list[DeadLetter] | None:
            letters = await store.dead_letters("bus")
            return list(letters) if letters else None

        [letter] = await eventually(dead, "the unroutable event a dead letter")
        assert letter.event_id == event_id
        assert letter.attempts == 2  # a failure of the event's: counted
        assert letter.last_error == (
            f"no queue is bound to exchange {broker.exchange} for routing key marketing.send"
        )
        assert await broker.is_durable_topic()
    finally:
        await broker.cleanup()


async def test_a_stream_that_does_not_take_the_subject_is_left_as_it_is(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    broker = NatsBroker()
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    await js.add_stream(name=broker.stream, subjects=[f"{broker.prefix}-elsewhere.>"])
    sender = sender_for(broker)
    try:
        [claimed] = (await record(store, 1)).values()
        [outcome] = await sender.deliver([claimed])

        assert not outcome.delivered
        assert not outcome.unavailable  # a failure of the event's, retried, then dead
        assert outcome.error == (
            f"stream {broker.stream} does not take subject {broker.prefix}.marketing.send "
            f"(it takes {broker.prefix}-elsewhere.>)"
        )
        info = await js.stream_info(broker.stream)
        assert info.config.subjects == [f"{broker.prefix}-elsewhere.>"]
        assert info.state.messages == 0
        assert f"stream {broker.stream} takes {broker.prefix}-elsewhere.>" in caplog.text
    finally:
        await sender.close()
        await client.close()
        await broker.cleanup()


@pytest.mark.parametrize("maxlen", [10, 0])
async def test_redis_trims_the_stream_to_about_maxlen(store: SQLiteStore, maxlen: int) -> None:
    broker = RedisBroker(maxlen=maxlen)
    sender = sender_for(broker)
    try:
        events = list((await record(store, 400)).values())
        for start in range(0, 400, 100):
            assert await sender.deliver(events[start : start + 100]) == [DELIVERED] * 100

        length = await broker.client.xlen(broker.stream)
        if maxlen == 0:
            assert length == 400  # never trimmed
            return
        # `MAXLEN ~` drops whole nodes of the stream: it keeps at least maxlen entries,
        # and less than a node more.
        assert maxlen <= length <= maxlen + await broker.node_size() < 400
        newest = (await broker.received())[-1]
        assert newest.id == events[-1].event_id  # the oldest went
    finally:
        await sender.close()
        await broker.cleanup()


async def test_the_redis_connection_is_kept_between_batches_and_let_go_on_close(
    store: SQLiteStore,
) -> None:
    broker = RedisBroker()
    name = unique("bus")
    sender = RedisSender(
        RedisDestination(name=name, events=ALL_TYPES, stream=broker.stream, maxlen=0)
    )

    async def connections() -> int:
        clients = await broker.client.client_list()
        return sum(1 for c in clients if c.get("name") == f"pixelpost-{name}")

    try:
        events = list((await record(store, 4)).values())
        assert await sender.deliver(events[:2]) == [DELIVERED] * 2
        assert await sender.deliver(events[2:]) == [DELIVERED] * 2
        assert await connections() == 1
        await sender.close()

        async def closed() -> bool:
            return await connections() == 0

        await eventually(closed, "the connection closed")
    finally:
        await broker.cleanup()
