"""The dispatcher delivering the real store's outbox to a real webhook receiver and a
file: signatures, retries, Retry-After, 410, dead letters, replay, crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from standardwebhooks import Webhook

from pipeline.destinations import DELIVERED, Outcome, make_senders, unavailable
from pipeline.dispatch import Dispatcher
from pixelpost.config import Config, parse_config_text
from pixelpost.core.events import open_event, send_event
from pixelpost.store import Claimed, MessageRecord, SQLiteStore
from tests.clock import Clock
from tests.conftest import until
from tests.receiver import Receiver, start_receiver
from tracker.metrics import Metrics

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def config(
    tmp_path: Path,
    port: int,
    *,
    retry_delays: str = '["200ms", "200ms", "200ms"]',
    timeout: str = "1s",
) -> Config:
    return parse_config_text(
        f"""
[config_sets.marketing]
destinations = ["app", "archive"]

[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{port}/events"
secret = "{SECRET}"
events = ["send", "open"]
retry_delays = {retry_delays}
timeout = "{timeout}"

[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
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


DispatcherStarter = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def start_dispatcher() -> AsyncIterator[DispatcherStarter]:
    running: list[tuple[Dispatcher, aiohttp.ClientSession]] = []

    async def start(cfg: Config, store: SQLiteStore, **kwargs: object) -> Dispatcher:
        session = aiohttp.ClientSession()
        dispatcher = Dispatcher(
            config=cfg,
            store=store,
            senders=make_senders(cfg, session=session, store=store),
            **kwargs,  # type: ignore[arg-type]
        )
        dispatcher.start()
        dispatcher.wake()
        running.append((dispatcher, session))
        return dispatcher

    yield start
    for dispatcher, session in running:
        await dispatcher.stop(grace=0)
        await session.close()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    found = Receiver()
    runner, port = await start_receiver(found)
    yield found, port
    if found.hold is not None:
        found.hold.set()
    await runner.cleanup()


def file_lines(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_events_reach_the_webhook_signed_and_the_file(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    ids = await record(store, 3)
    await start_dispatcher(config(tmp_path, port), store)

    await hook.wait(3)
    await until(lambda: len(file_lines(tmp_path)) == 3, "three lines in the file")
    verifier = Webhook(SECRET)
    for request in hook.requests:
        payload = verifier.verify(request.body, request.headers)
        assert payload["mail"]["messageId"] == "m1"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["webhook-signature"].startswith("v1,")
    assert sorted(hook.delivered_ids) == sorted(ids)
    metrics = Metrics()

    async def scraped() -> str | None:
        await metrics.refresh(store)
        text = generate_latest(metrics.registry).decode()
        return (
            text if 'pixelpost_events_delivered_total{destination="archive"} 3.0' in text else None
        )

    text = await until(scraped, "the file's deliveries counted")
    assert 'pixelpost_events_delivered_total{destination="app"} 3.0' in text
    assert 'pixelpost_events_delivered_total{destination="archive"} 3.0' in text
    assert 'pixelpost_outbox_depth{destination="app"} 0.0' in text
    assert sorted(json.dumps(line, sort_keys=True) for line in file_lines(tmp_path)) == sorted(
        json.dumps(json.loads(r.body), sort_keys=True) for r in hook.requests
    )


async def test_a_receiver_down_for_a_while_gets_everything_once_back(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    hook.status = 503
    ids = await record(store, 4)
    await start_dispatcher(
        config(tmp_path, port, retry_delays='["200ms", "200ms", "200ms", "200ms", "200ms"]'), store
    )

    await hook.wait(4 * 3)  # every event failed three times
    failed = len(hook.requests)
    hook.status = 200
    await until(
        lambda: len({r.headers["webhook-id"] for r in hook.requests[failed:]}) == 4,
        "each event sent again",
        within=15,
    )
    after_recovery = [r.headers["webhook-id"] for r in hook.requests[failed:]]
    assert sorted(set(after_recovery)) == sorted(ids)
    assert all(r.headers["webhook-id"] in ids for r in hook.requests)

    async def outbox_empty() -> bool:
        return await store.outbox_depth() == {}

    await until(outbox_empty, "the outbox emptied")
    assert await store.dead_letters() == []


async def test_retry_after_is_honoured(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    hook.status = 429
    hook.retry_after = "2"
    await record(store, 1)
    await start_dispatcher(config(tmp_path, port), store)

    await hook.wait(1)
    first = time.monotonic()
    hook.status = 200
    await hook.wait(2, within=10)
    assert time.monotonic() - first >= 1.9


async def dead_letters_soon(store: SQLiteStore, count: int) -> list[object]:
    async def letters() -> list[object] | None:
        found = await store.dead_letters()
        return list(found) if len(found) >= count else None

    return await until(letters, f"{count} dead letters")


async def test_exhausted_retries_become_dead_letters_and_replay_delivers_them(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    hook.status = 500
    [event_id] = await record(store, 1)
    await start_dispatcher(config(tmp_path, port, retry_delays='["100ms", "100ms"]'), store)

    [letter] = await dead_letters_soon(store, 1)
    assert len(hook.requests) == 3  # the first attempt and two retries
    assert (letter.event_id, letter.destination, letter.attempts) == (event_id, "app", 3)  # type: ignore[attr-defined]
    assert letter.last_error.startswith("HTTP 500")  # type: ignore[attr-defined]
    assert len(file_lines(tmp_path)) == 1  # the file destination was not held up
    counts = (await store.counts())["app"]
    assert (counts.delivered, counts.failed, counts.dead, counts.pending) == (0, 3, 1, 0)

    hook.status = 200
    assert await store.replay("app") == 1
    await hook.wait(4)
    assert hook.requests[-1].headers["webhook-id"] == event_id


async def test_410_disables_the_destination_and_replay_enables_it(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, port = receiver
    hook.status = 410
    await record(store, 1)
    dispatcher = await start_dispatcher(config(tmp_path, port), store)

    await hook.wait(1)
    await dead_letters_soon(store, 1)
    assert "HTTP 410" in (await store.disabled())["app"]
    assert "destination disabled" in caplog.text
    await record_more(store)
    dispatcher.wake()
    await until(lambda: len(file_lines(tmp_path)) == 2, "two lines in the file")
    await dead_letters_soon(store, 2)
    assert len(hook.requests) == 1  # nothing more was sent to the disabled endpoint
    assert [letter.attempts for letter in await store.dead_letters("app")] == [1, 0]
    assert (await store.counts())["app"].dead == 2  # what the metric shows

    hook.status = 200
    assert await store.replay() == 2
    await hook.wait(3)
    assert await store.disabled() == {}


async def test_an_endpoint_gone_is_logged_once_however_many_deliveries_hear_it(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, port = receiver
    hook.status = 410
    await record(store, 6)
    await start_dispatcher(config(tmp_path, port), store)

    await dead_letters_soon(store, 6)
    assert len(hook.requests) > 1  # several were in flight when the first 410 came
    gone = [r for r in caplog.records if "the endpoint is gone" in r.getMessage()]
    assert len(gone) == 1


async def record_more(store: SQLiteStore) -> None:
    await store.record(events=[open_event("m1", ip="192.0.2.1", user_agent="ua", now=NOW)])


async def test_a_slow_endpoint_holds_up_no_other_destination(
    tmp_path: Path,
    store: SQLiteStore,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    hook.hold = asyncio.Event()  # the endpoint never answers
    await record(store, 20)
    started = time.monotonic()
    await start_dispatcher(config(tmp_path, port, timeout="10s"), store)

    await until(lambda: len(file_lines(tmp_path)) == 20, "the file's 20 lines", within=5)
    assert time.monotonic() - started < 5
    await hook.wait(8)  # its requests in flight, no more
    assert len(hook.requests) == 8


async def test_a_crash_before_marking_done_delivers_again_with_the_same_id(
    tmp_path: Path,
    receiver: tuple[Receiver, int],
    start_dispatcher: DispatcherStarter,
) -> None:
    hook, port = receiver
    clock = Clock()
    store = await SQLiteStore.open(tmp_path / "crash.db", clock=clock)
    hook.hold = asyncio.Event()
    [event_id] = await record(store, 1)
    cfg = config(tmp_path, port)
    first = await start_dispatcher(cfg, store)
    await hook.wait(1)  # the endpoint has it; the dispatcher has not heard back

    await first.stop(grace=0)  # the tracker dies here
    hook.hold.set()
    clock.now += 2 * 1 + 5 + 1  # the claim's lease lapses
    await start_dispatcher(cfg, store)

    await hook.wait(2)
    assert [r.headers["webhook-id"] for r in hook.requests] == [event_id, event_id]
    await store.close()


async def test_the_file_envelope_carries_each_event_id(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "envelopes.jsonl"
    cfg = parse_config_text(
        f"""
[config_sets.marketing]
destinations = ["archive"]

[destinations.archive]
type = "file"
path = "{path}"
format = "envelope"
""",
        environ={},
    )
    ids = await record(store, 3)
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(
            config=cfg, store=store, senders=make_senders(cfg, session=session, store=store)
        )
        dispatcher.start()
        dispatcher.wake()
        try:
            await until(
                lambda: path.exists() and len(path.read_text().splitlines()) == 3,
                "three envelopes in the file",
            )
        finally:
            await dispatcher.stop(grace=0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [sorted(line) for line in lines] == [["event", "id"]] * 3
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert {line["event"]["eventType"] for line in lines} == {"Send", "Open"}
    assert all(line["event"]["mail"]["messageId"] == "m1" for line in lines)


class Switch:
    """A destination that cannot be reached until the test switches it on, as a broker
    that is down answers (pipeline.destinations.base.unavailable)."""

    concurrency = 1
    batch_size = 10
    retry_delays = (0.2,)
    lease = 5.0

    def __init__(self) -> None:
        self.name = "switch"
        self.up = False
        self.offered = 0
        self.received: list[str] = []

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        self.offered += 1
        if not self.up:
            return [unavailable("connection refused", retry_after=0.3)] * len(batch)
        self.received += [claimed.event_id for claimed in batch]
        return [DELIVERED] * len(batch)

    async def close(self) -> None:
        pass


async def test_an_unavailable_destination_keeps_its_events_and_counts_no_attempts(
    tmp_path: Path, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse_config_text(
        f"""
[config_sets.marketing]
destinations = ["switch"]

[destinations.switch]
type = "file"
path = "{tmp_path / "unused.jsonl"}"
""",
        environ={},
    )
    caplog.set_level(logging.INFO, "pipeline.dispatch")
    switch = Switch()
    ids = await record(store, 5)
    dispatcher = Dispatcher(config=cfg, store=store, senders={"switch": switch})
    dispatcher.start()
    dispatcher.wake()
    try:
        await until(lambda: switch.offered >= 3, "three offers to the destination", within=10)
        # One offer per pause, not a claim loop; and after more failures than the
        # schedule allows, no dead letter: an outage is no attempt.
        started = time.monotonic()
        offered = switch.offered
        await until(lambda: switch.offered >= offered + 2, "two more offers", within=10)
        assert time.monotonic() - started >= 0.45
        assert await store.dead_letters() == []
        counts = (await store.counts())["switch"]
        assert counts.pending == 5
        assert counts.failed >= 5 * 3
        assert counts.dead == 0
        metrics = Metrics()  # what an operator sees of the outage
        await metrics.refresh(store)
        text = generate_latest(metrics.registry).decode()
        assert 'pixelpost_outbox_depth{destination="switch"} 5.0' in text
        failed = re.search(r'pixelpost_events_failed_total\{destination="switch"\} (\d+)', text)
        assert failed is not None
        assert int(failed[1]) >= counts.failed
        assert 'pixelpost_events_dead_lettered_total{destination="switch"} 0.0' in text
        warned = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warned) == 1
        assert warned[0].getMessage() == (
            "dispatch switch: unavailable: connection refused; its events wait in the outbox"
        )

        switch.up = True
        await until(lambda: len(switch.received) == 5, "every event once the destination is up")
        assert sorted(switch.received) == sorted(ids)

        async def emptied() -> bool:
            return await store.outbox_depth() == {}

        await until(emptied, "the outbox emptied")
        assert any("available again" in r.getMessage() for r in caplog.records)
    finally:
        await dispatcher.stop(grace=0)
