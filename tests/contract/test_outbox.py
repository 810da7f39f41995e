"""The Outbox role: routing, claims with a lease, retries, dead letters, replay and
disabled destinations."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pixelpost.core.event_types import EventType
from pixelpost.core.events import click_event, open_event, send_event
from tests.clock import Clock
from tests.contract.campaign import TO_ARCHIVE_AND_APP, message
from tests.contract.conftest import StoreOpener

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


async def test_route_claim_deliver(open_store: StoreOpener) -> None:
    clock = Clock(1_000_000.0)
    store = await open_store(clock=clock)
    await store.record(
        messages=[message("m1", "marketing"), message("m2", None)],
        events=[
            send_event("m1", now=NOW),
            click_event(
                "m1", ip="192.0.2.1", user_agent="ua", link="https://x", link_tags={}, now=NOW
            ),
            send_event("m2", now=NOW),
            open_event("unknown", ip="192.0.2.1", user_agent="ua", now=NOW),
        ],
    )

    assert await store.route(TO_ARCHIVE_AND_APP) == 4
    assert await store.route(TO_ARCHIVE_AND_APP) == 0
    assert await store.outbox_depth() == {"archive": 2, "app": 1}

    claimed = await store.claim("archive", limit=10, lease=30)
    assert [c.event_type for c in claimed] == [EventType.SEND, EventType.CLICK]
    assert [c.config_set for c in claimed] == ["marketing", "marketing"]
    body = json.loads(claimed[1].body)
    assert body["eventType"] == "Click"
    assert body["mail"]["messageId"] == "m1"
    assert body["click"]["link"] == "https://x"
    assert await store.claim("archive", limit=10, lease=30) == []  # hidden while claimed

    await store.delivered("archive", [claimed[0].seq])
    clock.now += 31  # the lease of the undelivered one lapses: it comes back
    [again] = await store.claim("archive", limit=10, lease=30)
    assert again.event_id == claimed[1].event_id
    assert again.attempts == 0
    await store.close()


async def test_retry_dead_letter_and_replay(open_store: StoreOpener) -> None:
    clock = Clock(1_000_000.0)
    store = await open_store(clock=clock)
    await store.record(messages=[message("m1", "marketing")], events=[send_event("m1", now=NOW)])
    await store.route(TO_ARCHIVE_AND_APP)
    [claimed] = await store.claim("archive", limit=1, lease=30)

    await store.retry("archive", claimed.seq, attempts=1, at=clock.now + 60, error="HTTP 503")
    assert await store.claim("archive", limit=1, lease=30) == []
    clock.now += 61
    [retried] = await store.claim("archive", limit=1, lease=30)
    assert retried.attempts == 1

    await store.dead("archive", retried.seq, attempts=2, error="HTTP 500: boom")
    clock.now += 1000
    assert await store.claim("archive", limit=1, lease=30) == []
    [letter] = await store.dead_letters()
    assert (letter.event_id, letter.destination, letter.attempts) == (
        claimed.event_id,
        "archive",
        2,
    )
    assert letter.last_error == "HTTP 500: boom"
    assert letter.event_type is EventType.SEND
    assert await store.dead_letters("app") == []

    assert await store.replay("app") == 0
    assert await store.replay("archive") == 1
    [replayed] = await store.claim("archive", limit=1, lease=30)
    assert (replayed.event_id, replayed.attempts) == (claimed.event_id, 0)
    assert await store.dead_letters() == []
    await store.close()


async def test_a_disabled_destination_collects_dead_letters_until_replayed(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    await store.record(
        messages=[message("m1", "marketing")],
        events=[open_event("m1", ip="i", user_agent="u", now=NOW)],
    )
    await store.route(TO_ARCHIVE_AND_APP)
    [refused] = await store.claim("app", limit=10, lease=30)

    await store.disable(
        "app", "disabled: the endpoint answered HTTP 410 Gone", seq=refused.seq, attempts=1
    )
    await store.record(events=[open_event("m1", ip="i", user_agent="u", now=NOW)])
    await store.route(TO_ARCHIVE_AND_APP)

    assert await store.disabled() == {"app": "disabled: the endpoint answered HTTP 410 Gone"}
    assert await store.claim("app", limit=10, lease=30) == []
    letters = await store.dead_letters("app")
    assert [letter.attempts for letter in letters] == [1, 0]
    counts = await store.counts()
    assert (counts["app"].failed, counts["app"].dead) == (1, 2)
    assert len(await store.claim("archive", limit=10, lease=30)) == 2
    assert await store.replay() == 2
    assert await store.disabled() == {}
    assert len(await store.claim("app", limit=10, lease=30)) == 2
    await store.close()
