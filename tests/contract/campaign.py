"""A small campaign of copies, opens and clicks that the store contract tests and the
SQLite-only tests record and count."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, bounce_event, delivery_event, send_event
from pixelpost.core.ids import new_event_id
from pixelpost.core.stats import StatsQuery, report
from pixelpost.store import Hit, MessageRecord, Route, Store

H0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
H1 = H0 + 3600
A = "https://example.com/a"
B = "https://example.com/b"


def message(message_id: str, config_set: str | None, **tags: str) -> MessageRecord:
    all_tags = {name: [value] for name, value in tags.items()}
    if config_set is not None:
        all_tags["ses:configuration-set"] = [config_set]
    mail = {"messageId": message_id, "tags": all_tags}
    return MessageRecord(
        id=message_id,
        config_set=config_set,
        created_at=datetime.fromtimestamp(H0, UTC),
        mail=json.dumps(mail),
    )


# Every event type of "marketing" to the "archive" destination, and all but Send to "app".
TO_ARCHIVE_AND_APP = [
    Route(config_set="marketing", event_type=t, destination="archive") for t in EventType
] + [
    Route(config_set="marketing", event_type=t, destination="app")
    for t in EventType
    if t is not EventType.SEND
]


def opened(
    message_id: str, at: float, *, reason: str | None = None, proxy: str | None = None
) -> Hit:
    return Hit(
        kind=EventType.OPEN,
        message_id=message_id,
        ip="192.0.2.1",
        user_agent="UA",
        at=at,
        machine=reason is not None,
        reason=reason,
        proxy=proxy,
    )


def clicked(message_id: str, link: str, at: float, *, reason: str | None = None) -> Hit:
    return Hit(
        kind=EventType.CLICK,
        message_id=message_id,
        ip="192.0.2.1",
        user_agent="UA",
        at=at,
        link=link,
        link_tags="{}",
        machine=reason is not None,
        reason=reason,
    )


def subscription(
    message_id: str,
    at: float,
    *,
    unsubscribe: bool = True,
    source: str = "UnsubscribeLink",
    was: bool | None = None,
) -> Event:
    """A Subscription event, its object as SES writes it: an unsubscribe from all, or
    (`unsubscribe` False) a subscription again; `was`: the old preference, if not the
    opposite of the new one."""
    when = datetime.fromtimestamp(at, UTC)
    old = not unsubscribe if was is None else was
    detail = {
        "contactList": "marketing",
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "source": source,
        "newTopicPreferences": {"unsubscribeAll": unsubscribe, "topicSubscriptionStatus": []},
        "oldTopicPreferences": {"unsubscribeAll": old, "topicSubscriptionStatus": []},
    }
    return Event(
        id=new_event_id(),
        type=EventType.SUBSCRIPTION,
        message_id=message_id,
        created_at=when,
        detail=json.dumps(detail, separators=(",", ":")),
    )


def delivered(message_ids: list[str], at: float) -> list[Event]:
    """Send and Delivery events of each copy."""
    when = datetime.fromtimestamp(at, UTC)
    return [
        event
        for m in message_ids
        for event in (
            send_event(m, now=when),
            delivery_event(
                m,
                recipients=["r@example.com"],
                smtp_response="250 ok",
                processing_ms=5,
                reporting_mta="relay",
                now=when,
            ),
        )
    ]


async def funnel(store: Store, **query: Any) -> dict[str, Any]:
    await store.rollup()
    stats_query = StatsQuery(**query)
    return report(stats_query, await store.stats(stats_query), now=H1 + 3600)


async def record_campaign(store: Store) -> None:
    at = datetime.fromtimestamp(H0 + 1, UTC)
    copies = [
        message("m1", "marketing", campaign="spring"),
        message("m2", "marketing", campaign="spring"),
        message("m3", "marketing", campaign="fall"),
        message("m4", "news"),
        message("m5", None),
    ]
    await store.record(
        messages=copies,
        events=[
            *(send_event(m.id, now=at) for m in copies),
            *(
                delivery_event(
                    m,
                    recipients=["r@example.com"],
                    smtp_response="250 ok",
                    processing_ms=5,
                    reporting_mta="relay",
                    now=at,
                )
                for m in ("m1", "m2", "m3", "m4")
            ),
            bounce_event(
                "m5",
                bounce_type="Permanent",
                bounce_subtype="General",
                recipients=[("x@example.com", "5.1.1", "smtp; 550 no")],
                reporting_mta="relay",
                now=at,
            ),
        ],
    )
    await store.record_hits(
        [
            opened("m1", H0 + 5, reason="apple_mpp"),
            clicked("m1", A, H0 + 6, reason="click_after_delivery"),
            opened("m1", H1 + 10),
            opened("m1", H1 + 20),
            opened("m2", H1 + 30, proxy="gmail"),
            clicked("m1", A, H1 + 40),
            clicked("m1", B, H1 + 50),
            clicked("m2", A, H1 + 60),
            clicked("m2", A, H1 + 70),
        ]
    )


ARCHIVE = [Route(config_set="marketing", event_type=t, destination="archive") for t in EventType]
