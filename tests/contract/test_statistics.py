"""The Statistics role: the funnel per configuration set, tag, link and hour, uniques
counted once, and ranges over days."""

from __future__ import annotations

from datetime import UTC, datetime

from pixelpost.core.events import send_event
from pixelpost.core.stats import StatsQuery
from tests.contract.campaign import H0, H1, A, B, clicked, funnel, message, opened, record_campaign
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
    }


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
