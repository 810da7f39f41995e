"""The SuppressionList role: one entry per address, looked up for a message's
recipients at once, listed in pages, shared by every process of the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pixelpost.core.event_types import EventType
from pixelpost.core.events import SubscriptionSource, bounce_event
from pixelpost.core.subscription import Subscriber, resubscribed, unsubscribed
from pixelpost.core.suppression import BadEntry, Reason, Suppressed, normalize, reason
from tests.contract.campaign import message
from tests.contract.conftest import StoreOpener

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
T1 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def entry(address: str, why: Reason = Reason.BOUNCE, at: datetime = T0) -> Suppressed:
    return Suppressed(address=address, reason=why, created_at=at, message_id=f"m-{address}")


async def test_suppressed_addresses_are_found_among_recipients(open_store: StoreOpener) -> None:
    store = await open_store()
    assert await store.suppressed(["a@example.com"]) == frozenset()
    assert await store.suppress([entry("a@example.com"), entry("b@example.com")]) == 2
    found = await store.suppressed(["a@example.com", "c@example.com", "b@example.com"])
    assert found == {"a@example.com", "b@example.com"}
    assert await store.suppressed([]) == frozenset()


async def test_a_large_message_is_looked_up_whole(open_store: StoreOpener) -> None:
    """A fan-out's recipients, more than one statement takes: every listed one is found."""
    store = await open_store()
    recipients = [f"r{n}@example.com" for n in range(2_345)]
    listed = recipients[::7]
    await store.suppress([entry(a) for a in listed])
    assert await store.suppressed(recipients) == set(listed)


async def test_an_entry_again_replaces_its_reason_and_time(open_store: StoreOpener) -> None:
    store = await open_store()
    assert await store.suppress([entry("a@example.com")]) == 1
    again = Suppressed(address="a@example.com", reason=Reason.COMPLAINT, created_at=T1)
    assert await store.suppress([again, entry("b@example.com")]) == 1  # b only is new
    assert await store.suppression("a@example.com") == again
    assert await store.suppression("b@example.com") == entry("b@example.com")
    assert await store.suppression("c@example.com") is None


async def test_an_address_comes_off_the_list(open_store: StoreOpener) -> None:
    store = await open_store()
    await store.suppress([entry("a@example.com")])
    assert await store.unsuppress("a@example.com") is True
    assert await store.unsuppress("a@example.com") is False
    assert await store.suppressed(["a@example.com"]) == frozenset()


async def test_the_list_pages_in_address_order_and_by_reason(open_store: StoreOpener) -> None:
    store = await open_store()
    addresses = [f"u{n:03}@example.com" for n in range(25)]
    await store.suppress(
        [entry(a, Reason.MANUAL if n % 5 == 0 else Reason.BOUNCE) for n, a in enumerate(addresses)]
    )
    pages, after = [], ""
    while page := await store.suppression_list(after=after, limit=10):
        pages.append([e.address for e in page])
        after = page[-1].address
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [address for page in pages for address in page] == addresses
    manual = await store.suppression_list(reason=Reason.MANUAL)
    assert [e.address for e in manual] == addresses[::5]


async def test_what_one_process_changes_another_sees(open_store: StoreOpener) -> None:
    store = await open_store()
    other = await open_store(again=0)
    await store.suppress([entry("a@example.com")])
    assert await other.suppressed(["a@example.com"]) == {"a@example.com"}
    assert await other.unsuppress("a@example.com")
    assert await store.suppressed(["a@example.com"]) == frozenset()


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        (" <jane@example.com> ", "jane@example.com"),
        ("jürgen@bücher.example", "jürgen@bücher.example"),
    ],
)
def test_addresses_are_keyed_without_case(written: str, key: str) -> None:
    assert normalize(written) == key


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("", "empty address"),
        ("jane", "no local part and domain"),
        ("jane@exa mple.com", "malformed domain"),
        ("a@b.example\r\nRCPT TO:<x@y>", "control character"),
        ("x" * 300 + "@example.com", "too long"),
    ],
)
def test_what_is_not_an_address_is_refused_by_name(written: str, problem: str) -> None:
    with pytest.raises(BadEntry, match=problem):
        normalize(written)


def test_reasons_are_read_in_any_case_and_a_wrong_one_is_named() -> None:
    assert reason("bounce") is Reason.BOUNCE
    with pytest.raises(BadEntry, match="unknown reason 'spam': one of BOUNCE, COMPLAINT"):
        reason("spam")


async def test_suppressions_are_recorded_in_one_commit_with_events(
    open_store: StoreOpener,
) -> None:
    """A returned report's Bounce and its suppression go in together (the intake), and
    taking the report again replaces the entry rather than adding one."""
    store = await open_store()
    await store.record(messages=[message("m1", "marketing")])
    bounce = bounce_event(
        "m1",
        bounce_type="Permanent",
        bounce_subtype="NoEmail",
        recipients=[("gone@example.org", "5.1.1", "smtp; 550 5.1.1 gone")],
        reporting_mta="mx.example.org",
        now=T0,
    )
    listed = Suppressed(
        address="gone@example.org", reason=Reason.BOUNCE, created_at=T0, message_id="m1"
    )

    await store.record(events=[bounce], suppressions=[listed])
    await store.record(suppressions=[listed])

    assert await store.suppression("gone@example.org") == listed
    assert await store.suppression_list() == [listed]
    assert (await store.event_counts())[EventType.BOUNCE] == 1


def subscriber(address: str = "jane@example.com", *, account: bool = False) -> Subscriber:
    return Subscriber(message_id="m1", address=address, config_set="news", account=account)


async def test_scopes_are_apart_and_a_set_looks_up_its_own_and_the_accounts(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    news = Suppressed(
        address="a@example.com",
        reason=Reason.UNSUBSCRIBE,
        created_at=T0,
        message_id="m1",
        config_set="news",
    )
    account = entry("b@example.com")
    assert await store.suppress([news, account, entry("a@example.com", at=T1)]) == 3
    recipients = ["a@example.com", "b@example.com", "c@example.com"]
    assert await store.suppressed(recipients, "news") == {"a@example.com", "b@example.com"}
    assert await store.suppressed(recipients, "billing") == {"a@example.com", "b@example.com"}
    assert await store.unsuppress("a@example.com")  # the account's entry only
    assert await store.suppressed(recipients, "billing") == {"b@example.com"}
    assert await store.suppressed(recipients, "news") == {"a@example.com", "b@example.com"}
    assert await store.suppressed(recipients) == {"b@example.com"}
    assert await store.suppression("a@example.com") is None
    assert await store.suppression("a@example.com", "news") == news
    assert await store.suppression_list() == [account]
    assert await store.suppression_list(config_set="news") == [news]
    assert not await store.unsuppress("a@example.com", "billing")
    assert await store.unsuppress("a@example.com", "news")
    assert await store.suppressed(recipients, "news") == {"b@example.com"}


@pytest.mark.parametrize("account", [False, True])
async def test_an_unsubscribe_is_one_entry_and_one_event_however_often_it_comes(
    open_store: StoreOpener, account: bool
) -> None:
    store = await open_store()
    await store.record(messages=[message("m1", "news")])
    who = subscriber(account=account)
    first = unsubscribed(who, source=SubscriptionSource.HEADER, now=T0)
    assert await store.unsubscribe(*first)
    replayed = unsubscribed(who, source=SubscriptionSource.HEADER, now=T1)
    assert not await store.unsubscribe(*replayed)
    assert (await store.event_counts())[EventType.SUBSCRIPTION] == 1
    assert await store.suppression("jane@example.com", who.scope) == first[0]
    # The scope decides which mail stops.
    stopped = await store.suppressed(["jane@example.com"], "billing")
    assert stopped == ({"jane@example.com"} if account else frozenset())
    assert await store.suppressed(["jane@example.com"], "news") == {"jane@example.com"}

    again = resubscribed(who, source=SubscriptionSource.LINK, now=T1)
    assert await store.resubscribe("jane@example.com", who.scope, again)
    assert not await store.resubscribe("jane@example.com", who.scope, again)
    assert (await store.event_counts())[EventType.SUBSCRIPTION] == 2
    assert await store.suppressed(["jane@example.com"], "news") == frozenset()


async def test_a_resubscribe_leaves_an_entry_made_for_another_reason(
    open_store: StoreOpener,
) -> None:
    """Somebody whose address bounced cannot take it off the list by resubscribing, and
    unsubscribing changes nothing there either (no event: nothing changed)."""
    store = await open_store()
    bounced = entry("jane@example.com")
    await store.suppress([bounced])
    who = subscriber(account=True)
    assert not await store.unsubscribe(
        *unsubscribed(who, source=SubscriptionSource.MAILTO, now=T1)
    )
    assert not await store.resubscribe(
        "jane@example.com", None, resubscribed(who, source=SubscriptionSource.LINK, now=T1)
    )
    assert await store.suppression("jane@example.com") == bounced
    assert EventType.SUBSCRIPTION not in await store.event_counts()
