"""What the broker senders share: subjects filled in per event, passwords kept out of
error texts, and the pauses after an unreachable broker."""

from __future__ import annotations

import random

import nats.js.errors
import redis.exceptions

from pipeline.destinations.base import DELIVERED, Outcome, unavailable
from pipeline.destinations.brokers import RECONNECT_DELAYS, Backoff, fill, scrub, secrets_in
from pipeline.destinations.nats import _full
from pipeline.destinations.redis import RedisSender
from pixelpost.config import RedisDestination
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


def test_a_full_or_failing_over_redis_is_an_outage_and_a_wrong_key_the_events_fault() -> None:
    sender = RedisSender(RedisDestination(name="r", events=frozenset(EventType)))
    for reply in (
        redis.exceptions.OutOfMemoryError(
            "OOM command not allowed when used memory > 'maxmemory'."
        ),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"),
    ):
        outcome = sender._outcome(reply)
        assert outcome.unavailable, reply
        assert outcome.error.startswith("redis://127.0.0.1:6379/0 cannot take events now: ")
    wrong = sender._outcome(
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    )
    assert not wrong.unavailable
    assert wrong.error.startswith("stream pixelpost:events refused it: WRONGTYPE")


def test_a_stream_out_of_room_is_an_outage_and_other_refusals_the_events_fault() -> None:
    full = nats.js.errors.APIError(code=503, err_code=10047, description="insufficient storage")
    limits = nats.js.errors.APIError(
        code=503, err_code=10077, description="maximum messages exceeded"
    )
    wrong = nats.js.errors.APIError(
        code=400, err_code=10060, description="expected stream does not match"
    )
    assert _full(full)
    assert _full(limits)
    assert not _full(wrong)


def test_settle_tells_the_unavailable_outcomes_of_a_batch_to_wait_the_same_pause() -> None:
    backoff = Backoff(random.Random(1))
    refused = Outcome(delivered=False, error="WRONGTYPE")
    down = unavailable("READONLY")
    settled = backoff.settle([DELIVERED, down, refused, down])
    pause = settled[1].retry_after
    assert pause is not None
    assert RECONNECT_DELAYS[0] * 0.8 <= pause <= RECONNECT_DELAYS[0] * 1.2
    assert settled == [DELIVERED, unavailable("READONLY", pause), refused, settled[1]]
    second = backoff.settle([down])[0].retry_after  # the next outage in a row waits longer
    assert second is not None
    assert second >= RECONNECT_DELAYS[1] * 0.8
    assert backoff.settle([DELIVERED, refused]) == [DELIVERED, refused]  # starts over
    after = backoff.settle([down])[0].retry_after
    assert after is not None
    assert after <= RECONNECT_DELAYS[0] * 1.2
