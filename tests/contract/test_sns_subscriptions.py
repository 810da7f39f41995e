"""The SnsSubscriptions role: one subscription per SNS-compatible destination, made by
whichever dispatcher comes first, confirmed by the right token only, ended by its
UnsubscribeURL, and forgotten by a replay once ended."""

from __future__ import annotations

import asyncio

from pixelpost.store import SnsSubscription
from tests.clock import Clock
from tests.contract.conftest import StoreOpener

TOPIC = "arn:pixelpost:sns:local:0:marketing"


def subscription(
    suffix: str, *, state: str = "pending", endpoint: str = "https://app.test/sns"
) -> SnsSubscription:
    return SnsSubscription(
        destination="django",
        arn=f"{TOPIC}:{suffix}",
        endpoint=endpoint,
        topic_arn=TOPIC,
        token=f"token-{suffix}" * 4,
        state=state,  # type: ignore[arg-type]
        requested_at=1000.0,
        changed_at=1000.0,
    )


async def test_the_first_subscription_made_wins(open_store: StoreOpener) -> None:
    store = await open_store()
    other = await open_store(again=0)  # as a second dispatcher sees the same store
    assert await store.sns_subscription("django") is None

    stored = await asyncio.gather(
        store.sns_subscribe(subscription("a")), other.sns_subscribe(subscription("b"))
    )
    assert stored[0] == stored[1]
    assert stored[0].arn in (f"{TOPIC}:a", f"{TOPIC}:b")
    assert await store.sns_subscription("django") == stored[0]
    assert await other.sns_subscriptions() == [stored[0]]


async def test_confirmation_needs_the_right_token(open_store: StoreOpener) -> None:
    clock = Clock(2000.0)
    store = await open_store(clock=clock)
    made = await store.sns_subscribe(subscription("a"))

    assert await store.sns_confirm(made.arn, "token-b" * 4) is None
    assert await store.sns_confirm(made.arn, "") is None
    assert await store.sns_confirm(f"{TOPIC}:nope", made.token) is None
    still = await store.sns_subscription("django")
    assert still is not None
    assert still.state == "pending"

    clock.now += 5
    confirmed = await store.sns_confirm(made.arn, made.token)
    assert confirmed is not None
    assert (confirmed.state, confirmed.changed_at) == ("confirmed", 2005.0)
    clock.now += 5
    again = await store.sns_confirm(made.arn, made.token)  # a second visit changes nothing
    assert again == confirmed


async def test_a_new_endpoint_replaces_only_the_subscription_it_names(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    old = await store.sns_subscribe(subscription("a", state="confirmed"))
    moved = subscription("b", endpoint="https://new.test/sns")

    replaced = await store.sns_subscribe(moved, replacing=old.arn)
    assert (replaced.arn, replaced.endpoint, replaced.state) == (
        moved.arn,
        "https://new.test/sns",
        "pending",
    )
    # Another dispatcher still replacing the old one finds it gone: nothing changes.
    late = await store.sns_subscribe(subscription("c"), replacing=old.arn)
    assert late == replaced
    assert await store.sns_confirm(old.arn, old.token) is None


async def test_unsubscribe_ends_it_and_replay_forgets_it(open_store: StoreOpener) -> None:
    store = await open_store()
    made = await store.sns_subscribe(subscription("a", state="confirmed"))

    assert await store.sns_unsubscribe(f"{TOPIC}:nope") is None
    ended = await store.sns_unsubscribe(made.arn)
    assert ended is not None
    assert ended.state == "unsubscribed"
    assert await store.sns_confirm(made.arn, made.token) is None  # no way back in

    await store.replay("other")
    assert await store.sns_subscription("django") == ended
    await store.replay("django")
    assert await store.sns_subscription("django") is None
