"""The Statistics role: the funnel per configuration set, tag, link and hour, uniques
counted once, and ranges over days."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pixelpost.core.events import send_event
from pixelpost.core.stats import StatsQuery
from tests.contract.campaign import (
    ARCHIVE,
    H0,
    H1,
    A,
    B,
    clicked,
    delivered,
    funnel,
    message,
    opened,
    record_campaign,
    subscription,
)
from tests.contract.conftest import StoreOpener


async def test_the_funnel_counts_people_and_machines_apart(open_store: StoreOpener) -> None:
    store = await open_store()
    try:
        await record_campaign(store)
        data = await funnel(store, config_set="marketing")
    finally:
        await store.close()
    totals = data["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]["total"]) == (3, 3, 0)
    assert totals["opened"] == {
        "total": 4,
        "unique": 2,
        "human": {"total": 3, "unique": 2, "proxied": 1},
        "machine": {"total": 1, "unique": 1, "reasons": {"apple_mpp": 1}},
    }
    assert totals["clicked"] == {
        "total": 5,
        "unique": 2,
        "human": {"total": 4, "unique": 2},
        "bot": {"total": 1, "unique": 1, "reasons": {"click_after_delivery": 1}},
    }
    assert totals["rates"] == {
        "delivery": 1.0,
        "open": round(2 / 3, 4),
        "click": round(2 / 3, 4),
        "click_to_open": 1.0,
        "machine_open_share": 0.25,
        "bot_click_share": 0.2,
        "engagement": round(2 / 3, 4),
        "unsubscribe": 0.0,
    }
    assert totals["engaged"] == 2  # m1 and m2, opened and clicked by people
    assert (totals["unsubscribed"]["total"], totals["resubscribed"]) == (0, 0)


async def test_groups_by_hour_link_tag_and_set(open_store: StoreOpener) -> None:
    store = await open_store()
    try:
        await record_campaign(store)
        hours = await funnel(store, config_set="marketing", by="hour")
        links = await funnel(store, config_set="marketing", by="link")
        tags = await funnel(store, by="tag")
        spring = await funnel(store, tag="campaign:spring")
        sets = await funnel(store, by="config_set")
        later = await funnel(store, config_set="marketing", since=H1)
    finally:
        await store.close()

    assert [g["key"] for g in hours["groups"]] == ["2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"]
    first, second = hours["groups"]
    # m1's first open was the machine's at 10:00: the copy's unique open counts there.
    assert (first["opened"]["unique"], first["opened"]["machine"]["unique"]) == (1, 1)
    assert (second["opened"]["unique"], second["opened"]["human"]["unique"]) == (1, 2)
    assert (first["sent"], second["sent"]) == (3, 0)

    assert [g["key"] for g in links["groups"]] == [A, B]  # the most clicked first
    link_a, link_b = links["groups"]
    assert link_a["clicked"]["human"] == {"total": 3, "unique": 2}
    assert (link_a["clicked"]["bot"]["total"], link_b["clicked"]["human"]["total"]) == (1, 1)
    assert links["totals"]["sent"] == 3  # totals stay those of the whole selection

    assert {g["key"]: g["sent"] for g in tags["groups"]} == {
        "campaign:fall": 1,
        "campaign:spring": 2,
    }
    assert spring["totals"]["opened"]["human"]["unique"] == 2
    assert spring["totals"]["sent"] == 2

    assert {g["key"]: (g["sent"], g["bounced"]["Permanent"]) for g in sets["groups"]} == {
        None: (1, 1),
        "marketing": (3, 0),
        "news": (1, 0),
    }
    assert later["totals"]["sent"] == 0
    assert later["totals"]["clicked"]["human"]["total"] == 4
    assert later["since"] == "2026-11-29T11:00:00Z"


async def test_a_copy_counts_once_as_unique_across_roll_ups(open_store: StoreOpener) -> None:
    store = await open_store()
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0), clicked("m1", A, H0)])
        assert await store.rollup() == 2
        assert await store.rollup() == 0  # nothing new
        await store.record_hits(
            [opened("m1", H0 + 60), clicked("m1", A, H0 + 60), clicked("m1", B, H0 + 61)]
        )
        data = await funnel(store, config_set="marketing", by="link")
    finally:
        await store.close()
    assert data["totals"]["opened"]["human"] == {"total": 2, "unique": 1, "proxied": 0}
    assert data["totals"]["clicked"]["human"] == {"total": 3, "unique": 1}
    assert {g["key"]: g["clicked"]["human"]["unique"] for g in data["groups"]} == {A: 1, B: 1}


async def test_ranges_over_days_read_days_and_the_hours_at_their_ends(
    open_store: StoreOpener,
) -> None:
    day = 86400
    times = [H0 + 1800, H0 + day - 7 * 3600, H0 + day + 5 * 3600, H0 + 2 * day - 1]
    times += [H0 + 2 * day + 14 * 3600 - 1, H0 + 4 * day - 10 * 3600, H0 + 2 * day - 34200]
    store = await open_store()
    try:
        await store.record(messages=[message("m", "marketing")])
        await store.record(
            events=[send_event("m", now=datetime.fromtimestamp(t, UTC)) for t in times]
        )
        await store.rollup()
        bounds = [None, H0 - day, H0, H0 + 3600, H0 + 7200 + 5, H0 + day - 8 * 3600]
        bounds += [H0 + 2 * day, H0 + 2 * day + 3600, H0 + 3 * day + 1, H0 + 5 * day]
        bounds += [H0 + 2 * day - 36000 + 60]  # a minute into a day's first hour
        for since in bounds:
            for until in bounds:
                if since is not None and until is not None and since >= until:
                    continue
                low = since // 3600 * 3600 if since is not None else float("-inf")
                high = -(-until // 3600) * 3600 if until is not None else float("inf")
                expected = sum(1 for t in times if low <= t < high)
                for by in (None, "day", "hour"):
                    query = StatsQuery(since=since, until=until, by=by)  # type: ignore[arg-type]
                    table = await store.stats(query)
                    assert table.totals.get("sent", 0) == expected, (since, until)
                    groups = sum(g.get("sent", 0) for g in table.groups.values())
                    assert groups == (expected if by else 0), (since, until, by)
    finally:
        await store.close()


def engaged_by_key(data: dict[str, Any]) -> dict[str | None, int]:
    return {g["key"]: g["engaged"] for g in data["groups"]}


async def test_engaged_counts_each_copy_a_person_opened_or_clicked_once(
    open_store: StoreOpener,
) -> None:
    copies = ["clicked", "machine", "both", "bot", "mpp_then_click", "opened"]
    store = await open_store()
    try:
        await store.record(
            messages=[message(m, "marketing", campaign="spring") for m in copies],
            events=delivered(copies, H0),
        )
        await store.record_hits(
            [
                clicked("clicked", A, H0 + 60),  # no open: the pixel was blocked
                opened("machine", H0 + 5, reason="apple_mpp"),
                opened("both", H0 + 100),
                clicked("both", A, H0 + 110),
                clicked("bot", A, H0 + 6, reason="click_after_delivery"),
                opened("mpp_then_click", H0 + 5, reason="apple_mpp"),
                opened("opened", H1 + 10),
            ]
        )
        await store.rollup()
        # Later roll-ups: a copy already counted as engaged does not count again.
        await store.record_hits(
            [
                clicked("both", B, H1 + 30),
                clicked("mpp_then_click", B, H1 + 40),  # a person, after the machine
                opened("clicked", H1 + 50),
                opened("machine", H1 + 60, reason="apple_mpp"),
                clicked("bot", B, H1 + 70, reason="link_burst"),
            ]
        )
        data = await funnel(store, config_set="marketing")
        hours = await funnel(store, config_set="marketing", by="hour")
        links = await funnel(store, config_set="marketing", by="link")
        tags = await funnel(store, by="tag")
        sets = await funnel(store, by="config_set")
        later = await funnel(store, config_set="marketing", since=H1)
    finally:
        await store.close()
    totals = data["totals"]
    # clicked, both, mpp_then_click and opened; the machine's and the bot's copies not.
    assert totals["engaged"] == 4
    assert totals["opened"]["human"]["unique"] == 3  # both, opened, clicked (later)
    assert totals["clicked"]["human"]["unique"] == 3  # clicked, both, mpp_then_click
    assert totals["rates"]["engagement"] == round(4 / 6, 4)
    assert totals["rates"]["open"] == 0.5  # fewer than engaged: pixels are blocked
    # Each copy at the hour of its first open or click by a person.
    assert engaged_by_key(hours) == {"2026-11-29T10:00:00Z": 2, "2026-11-29T11:00:00Z": 2}
    assert later["totals"]["engaged"] == 2  # mpp_then_click and opened
    # As unique opens: per copy, not per link.
    assert engaged_by_key(links) == {A: 0, B: 0}
    assert engaged_by_key(tags) == {"campaign:spring": 4}
    assert engaged_by_key(sets) == {"marketing": 4}


async def test_unsubscribes_count_by_source_and_once_per_copy(open_store: StoreOpener) -> None:
    copies = ["back_and_gone", "twice", "topics", "mailto"]
    store = await open_store()
    try:
        await store.record(
            messages=[
                *(message(m, "marketing", campaign="spring") for m in copies[:3]),
                message("mailto", "news"),
            ],
            events=[
                *delivered(copies, H0),
                subscription("back_and_gone", H0 + 60, source="UnsubscribeHeader"),
                subscription("twice", H0 + 70),
            ],
        )
        await store.rollup()
        await store.record(
            events=[
                # Unsubscribed, subscribed again, unsubscribed again: two unsubscribes,
                # one resubscribe, one copy unsubscribed.
                subscription("back_and_gone", H1 + 10, unsubscribe=False),
                subscription("back_and_gone", H1 + 20),
                subscription("twice", H1 + 30),  # the link followed again
                # A change of topics only: neither an unsubscribe nor a resubscribe.
                subscription("topics", H1 + 35, unsubscribe=False, was=False),
                subscription("mailto", H1 + 40, source="UnsubscribeMailto"),
            ]
        )
        data = await funnel(store)
        hours = await funnel(store, by="hour", since=H0, until=H1 + 3600)
        sets = await funnel(store, by="config_set")
        spring = await funnel(store, tag="campaign:spring")
    finally:
        await store.close()
    totals = data["totals"]
    assert totals["unsubscribed"] == {
        "total": 5,
        "unique": 3,
        "UnsubscribeHeader": 1,
        "UnsubscribeLink": 3,
        "UnsubscribeMailto": 1,
    }
    assert totals["resubscribed"] == 1
    assert totals["rates"]["unsubscribe"] == 0.75  # 3 copies of 4 delivered
    assert (totals["engaged"], totals["complained"]) == (0, 0)
    first, second = hours["groups"]
    assert (first["unsubscribed"]["unique"], first["unsubscribed"]["total"]) == (2, 2)
    assert first["unsubscribed"]["UnsubscribeHeader"] == 1
    assert (second["unsubscribed"]["unique"], second["unsubscribed"]["total"]) == (1, 3)
    assert (first["resubscribed"], second["resubscribed"]) == (0, 1)
    assert {g["key"]: g["unsubscribed"]["unique"] for g in sets["groups"]} == {
        "marketing": 2,
        "news": 1,
    }
    assert spring["totals"]["unsubscribed"]["total"] == 4
    assert spring["totals"]["unsubscribed"]["unique"] == 2


async def test_a_copy_counts_once_after_its_events_are_purged(open_store: StoreOpener) -> None:
    store = await open_store()
    try:
        await store.record(
            messages=[message("m1", "marketing")],
            events=[*delivered(["m1"], H0), subscription("m1", H0 + 30)],
        )
        await store.record_hits([clicked("m1", A, H0 + 60)])
        await store.rollup()
        await store.route(ARCHIVE)
        claimed = await store.claim("archive", limit=100, lease=60)
        await store.delivered("archive", [c.seq for c in claimed])
        assert await store.purge(H1) == (3, 1)  # all but the newest event; m1 is a stub

        # Long after: an open, a click and an unsubscribe of the same copy.
        await store.record_hits([opened("m1", H1 + 10), clicked("m1", B, H1 + 20)])
        await store.record(events=[subscription("m1", H1 + 30)])
        data = await funnel(store, config_set="marketing", by="hour")
    finally:
        await store.close()
    totals = data["totals"]
    assert totals["engaged"] == 1
    assert totals["opened"]["human"]["unique"] == 1  # its first open, though
    assert totals["clicked"]["human"] == {"total": 2, "unique": 1}
    assert (totals["unsubscribed"]["total"], totals["unsubscribed"]["unique"]) == (2, 1)
    assert engaged_by_key(data) == {"2026-11-29T10:00:00Z": 1, "2026-11-29T11:00:00Z": 0}
