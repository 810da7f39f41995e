"""Statistics queries: parameters read and checked, the funnel's arithmetic, the table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pixelpost.core.stats import (
    StatsQuery,
    StatsQueryError,
    StatsTable,
    counts,
    format_table,
    parse_query,
    report,
)

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()


def test_parameters_are_read() -> None:
    query = parse_query(
        {
            "config_set": "marketing",
            "tag": "campaign:spring",
            "since": "7d",
            "until": "2026-11-30T06:00:00Z",
            "by": "day",
            "limit": "10",
        },
        now=NOW,
    )
    assert query == StatsQuery(
        config_set="marketing",
        tag="campaign:spring",
        since=NOW - 7 * 86400,
        until=datetime(2026, 11, 30, 6, tzinfo=UTC).timestamp(),
        by="day",
        limit=10,
    )
    assert (
        parse_query({"since": "2026-11-29"}, now=NOW).since
        == datetime(2026, 11, 29, tzinfo=UTC).timestamp()
    )
    assert parse_query({}, now=NOW) == StatsQuery()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"config": "x"}, "config: unknown parameter"),
        ({"config_set": "no such/set"}, "config_set: 'no such/set' is not"),
        ({"tag": "campaign"}, "tag: 'campaign' is not a tag (write it name:value)"),
        ({"since": "last week"}, "since: 'last week' is neither a date"),
        ({"until": "2026-13-01"}, "until: '2026-13-01' is neither"),
        ({"since": "1d", "until": "2d"}, "since: must be before until"),
        ({"by": "week"}, "by: 'week' is not one of hour, day, link, tag, config_set"),
        ({"by": "tag", "tag": "a:b"}, "by: by=tag groups by every tag"),
        ({"limit": "0"}, "limit: '0' is not a number from 1 to 10000"),
        ({"limit": "many"}, "limit: 'many' is not"),
        ({"limit": "\u00b2"}, "limit: '\u00b2' is not"),
        ({"limit": "9" * 5000}, "limit: '99999999999999999999' is not"),
        ({"since": "100000000d"}, "since: '100000000d' is not between the years 2000 and 9000"),
        ({"until": "1970-01-02"}, "until: '1970-01-02' is not between"),
        ({"by": "hour"}, "by: by=hour answers at most 31 days"),
        ({"by": "hour", "since": "32d"}, "by: by=hour answers at most 31 days"),
    ],
)
def test_a_bad_parameter_is_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(StatsQueryError) as raised:
        parse_query(params, now=NOW)
    assert str(raised.value).startswith(message)


def test_rates_count_people_and_are_null_without_a_denominator() -> None:
    funnel = counts(
        {
            "sent": 10,
            "delivered": 8,
            "opens:human": 6,
            "opens:machine": 14,
            "unique_opens:human": 4,
            "clicks:human": 3,
            "clicks:bot": 1,
            "unique_clicks:human": 2,
            "bounced:Permanent": 1,
            "bounced:Transient": 1,
            "engaged": 5,
            "unsubscribed:UnsubscribeHeader": 2,
            "unsubscribed:UnsubscribeLink": 1,
            "unique_unsubscribes": 2,
            "resubscribed": 1,
        }
    )
    assert funnel["rates"] == {
        "delivery": 0.8,
        "open": 0.5,
        "click": 0.25,
        "click_to_open": 0.5,
        "machine_open_share": 0.7,
        "bot_click_share": 0.25,
        "engagement": 0.625,  # 5 of 8 delivered, more than opened (4): a click without one
        "unsubscribe": 0.25,  # copies, not unsubscribes: 2 of 8
    }
    assert funnel["bounced"] == {"total": 2, "Permanent": 1, "Transient": 1, "Undetermined": 0}
    assert (funnel["engaged"], funnel["resubscribed"]) == (5, 1)
    assert funnel["unsubscribed"] == {
        "total": 3,
        "unique": 2,
        "UnsubscribeHeader": 2,
        "UnsubscribeLink": 1,
        "UnsubscribeMailto": 0,
    }
    assert set(counts({})["rates"].values()) == {None}
    assert counts({})["unsubscribed"] == {
        "total": 0,
        "unique": 0,
        "UnsubscribeHeader": 0,
        "UnsubscribeLink": 0,
        "UnsubscribeMailto": 0,
    }


def test_the_table_shows_groups_and_the_total() -> None:
    query = StatsQuery(config_set="marketing", by="config_set")
    table = StatsTable(
        totals={
            "sent": 3,
            "delivered": 2,
            "unique_opens:human": 1,
            "opens:machine:apple_mpp": 2,
            "engaged": 2,
            "unsubscribed:UnsubscribeLink": 2,
            "unique_unsubscribes": 1,
            "resubscribed": 1,
        },
        groups={"marketing": {"sent": 3, "delivered": 2, "engaged": 2}, "": {"sent": 1}},
    )
    text = format_table(report(query, table, now=NOW))
    lines = text.splitlines()
    assert lines[0] == "configuration set marketing, until 2026-11-30T12:30:00Z"
    assert lines[1].split() == [
        *("set", "sent", "delivered", "bounced", "complained", "opened", "machine", "opens"),
        *("clicked", "bot", "clicks", "engaged", "unsubscribed", "open", "rate", "click"),
        *("rate", "CTOR", "engagement", "unsub.", "rate"),
    ]
    assert lines[2].split()[:3] == ["(no", "set)", "1"]
    assert lines[3].split()[:3] == ["marketing", "3", "2"]
    assert lines[3].split()[9] == "2"  # engaged
    assert lines[4].split() == [
        *("total", "3", "2", "0", "0", "1", "0", "0", "0", "2", "1"),
        *("50.0%", "0.0%", "0.0%", "100.0%", "50.0%"),  # open, click, CTOR, engagement, unsub.
    ]
    assert lines[5].startswith("opened, clicked: copies people opened or clicked; engaged:")
    assert lines[6] == "machines: open: apple_mpp 2"
    assert lines[7] == (
        "unsubscribes: 2 (UnsubscribeHeader 0, UnsubscribeLink 2, UnsubscribeMailto 0),"
        " resubscribes: 1"
    )
    assert len(lines) == 8


def test_limit_cuts_the_ranking_of_links_not_a_range_of_days() -> None:
    days = {86400 * (20000 + n): {"sent": 1} for n in range(150)}
    by_day = report(StatsQuery(by="day", limit=100), StatsTable(totals={}, groups=days), now=NOW)
    assert len(by_day["groups"]) == 150
    assert by_day["groups"][-1]["key"] == "2025-03-02"  # the newest day is there
    links = {f"https://example.com/{n}": {"clicks:human": n} for n in range(150)}
    top = report(StatsQuery(by="link", limit=10), StatsTable(totals={}, groups=links), now=NOW)
    assert [g["key"] for g in top["groups"]][:2] == [
        "https://example.com/149",
        "https://example.com/148",
    ]
    assert len(top["groups"]) == 10
