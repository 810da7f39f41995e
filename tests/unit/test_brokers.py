"""What the broker senders share: subjects filled in per event, passwords kept out of
error texts, and the pauses after an unreachable broker."""

from __future__ import annotations

import random

from pipeline.destinations.brokers import RECONNECT_DELAYS, Backoff, fill, scrub, secrets_in
from pixelpost.core.event_types import EventType
from pixelpost.store import Claimed


def claimed(config_set: str, event_type: EventType) -> Claimed:
    return Claimed(
        seq=1,
        event_id="e1",
        event_type=event_type,
        message_id="m1",
        config_set=config_set,
        attempts=0,
        body=b"{}",
    )


def test_templates_take_the_set_and_the_configuration_name_of_the_type() -> None:
    template = "pixelpost.events.{config_set}.{event_type}"
    assert (
        fill(template, claimed("marketing", EventType.OPEN)) == "pixelpost.events.marketing.open"
    )
    assert fill(template, claimed("", EventType.DELIVERY_DELAY)) == (
        "pixelpost.events._.delivery_delay"
    )
    assert fill("all", claimed("x", EventType.SEND)) == "all"


def test_a_password_in_any_spelling_is_scrubbed() -> None:
    secrets = secrets_in("amqp://app:p%40ss@mq:5672/?password=other")
    assert secrets == {"p%40ss", "p@ss", "other"}
    assert scrub("login as app with p@ss (p%40ss) or other refused", secrets) == (
        "login as app with *** (***) or *** refused"
    )
    assert secrets_in("nats://127.0.0.1:4222") == frozenset()
    assert secrets_in("nats://s3cr3t-t0ken@127.0.0.1:4222") == {"s3cr3t-t0ken"}
    assert secrets_in("nats://app:pw@127.0.0.1:4222") == {"pw"}


def test_the_pause_grows_with_outages_in_a_row_and_starts_again_after_one_gets_through() -> None:
    backoff = Backoff(random.Random(1))
    pauses = [backoff.pause() for _ in range(len(RECONNECT_DELAYS) + 2)]
    for pause, delay in zip(pauses, [*RECONNECT_DELAYS, RECONNECT_DELAYS[-1], 30.0], strict=True):
        assert delay * 0.8 <= pause <= delay * 1.2
    backoff.reset()
    assert backoff.pause() <= RECONNECT_DELAYS[0] * 1.2
