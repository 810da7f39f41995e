"""Reputation: the bounce and complaint rates, their statuses at SES's thresholds, the
window read and checked, the answer and its table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pixelpost.core.reputation import (
    BOUNCE_AT_RISK,
    BOUNCE_WARNING,
    COMPLAINT_AT_RISK,
    COMPLAINT_WARNING,
    WINDOW_DEFAULT,
    Reputation,
    ReputationQuery,
    assess,
    format_table,
    parse_query,
    report,
    stats_query,
    status,
)
from pixelpost.core.stats import StatsQuery, StatsQueryError, StatsTable

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()


def test_the_thresholds_are_ses_s() -> None:
    assert (BOUNCE_WARNING, BOUNCE_AT_RISK) == (0.05, 0.10)
    assert (COMPLAINT_WARNING, COMPLAINT_AT_RISK) == (0.001, 0.005)


@pytest.mark.parametrize(
    ("bounces", "sent", "expected"),
    [
        (0, 100, "healthy"),
        (4, 100, "healthy"),
        (49_999, 1_000_000, "healthy"),  # just under 5 %
        (5, 100, "warning"),  # 5 % exactly has reached it
        (1, 20, "warning"),
        (50_000, 1_000_000, "warning"),
        (99_999, 1_000_000, "warning"),  # just under 10 %
        (10, 100, "at_risk"),  # 10 % exactly
        (3, 30, "at_risk"),  # 0.1 in binary is not 3 / 30 in floating point
        (7, 7, "at_risk"),
    ],
)
def test_the_bounce_status_at_its_boundaries(bounces: int, sent: int, expected: str) -> None:
    figures = Reputation(sent=sent, permanent_bounces=bounces, delivered=sent, complaints=0)
    assert figures.bounce_status == expected
    assert figures.complaint_status == "healthy"


@pytest.mark.parametrize(
    ("complaints", "delivered", "expected"),
    [
        (0, 1000, "healthy"),
        (999, 1_000_000, "healthy"),  # 0.0999 %
        (1, 1000, "warning"),  # 0.1 % exactly
        (1, 1001, "healthy"),  # 0.0999 %: healthy, though it rounds to 0.1 %
        (3, 3000, "warning"),
        (4_999, 1_000_000, "warning"),
        (5, 1000, "at_risk"),  # 0.5 % exactly
        (1, 200, "at_risk"),
    ],
)
def test_the_complaint_status_at_its_boundaries(
    complaints: int, delivered: int, expected: str
) -> None:
    figures = Reputation(sent=0, permanent_bounces=0, delivered=delivered, complaints=complaints)
    assert figures.complaint_status == expected


def test_a_rate_over_nothing_is_null_and_healthy() -> None:
    nothing = Reputation(sent=0, permanent_bounces=0, delivered=0, complaints=0)
    assert (nothing.bounce_rate, nothing.bounce_status) == (None, "healthy")
    assert (nothing.complaint_rate, nothing.complaint_status) == (None, "healthy")
    # Complaints about mail delivered before the window, with none delivered in it.
    late = Reputation(sent=0, permanent_bounces=2, delivered=0, complaints=3)
    assert (late.bounce_rate, late.bounce_status) == (None, "healthy")
    assert (late.complaint_rate, late.complaint_status) == (None, "healthy")
    assert status(0, 0, warning=0.05, at_risk=0.1) == "healthy"


def test_rates_keep_enough_decimals_to_tell_the_complaint_thresholds_apart() -> None:
    figures = Reputation(sent=3, permanent_bounces=1, delivered=1001, complaints=1)
    assert figures.bounce_rate == 0.333333
    assert figures.complaint_rate == 0.000999


def test_only_permanent_bounces_count() -> None:
    metrics = {
        "sent": 100,
        "delivered": 80,
        "bounced:Permanent": 4,
        "bounced:Transient": 15,
        "bounced:Undetermined": 1,
        "complained": 1,
        "opens:human": 50,
    }
    figures = assess(metrics)
    assert figures == Reputation(sent=100, permanent_bounces=4, delivered=80, complaints=1)
    assert (figures.bounce_rate, figures.bounce_status) == (0.04, "healthy")
    assert (figures.complaint_rate, figures.complaint_status) == (0.0125, "at_risk")
    assert assess({}) == Reputation(sent=0, permanent_bounces=0, delivered=0, complaints=0)


def test_parameters_are_read() -> None:
    assert parse_query({}) == ReputationQuery(config_set=None, window=WINDOW_DEFAULT)
    assert WINDOW_DEFAULT == 7 * 86400
    assert parse_query({"config_set": "marketing", "window": "30d"}) == ReputationQuery(
        config_set="marketing", window=30 * 86400
    )
    assert parse_query({"window": "1h"}).window == 3600
    assert parse_query({"window": "90d"}).window == 90 * 86400
    assert parse_query({"window": "", "config_set": ""}) == ReputationQuery()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window": "a week"}, "window: 'a week' is not a duration"),
        ({"window": "7"}, "window: '7' is not a duration"),
        ({"window": "91d"}, "window: '91d' is not from 1h to 90d"),
        ({"window": "59m"}, "window: '59m' is not from 1h to 90d"),
        ({"window": "0h"}, "window: '0h' is not from 1h to 90d"),
        ({"config_set": "no such/set"}, "config_set: 'no such/set' is not"),
        ({"since": "7d"}, "since: unknown parameter (known: config_set, window)"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(StatsQueryError) as raised:
        parse_query(params)
    assert str(raised.value).startswith(message)


def test_the_window_is_rolling_back_from_now_in_whole_hours() -> None:
    query = ReputationQuery(config_set="marketing", window=7 * 86400)
    assert stats_query(query, now=NOW) == StatsQuery(
        config_set="marketing",
        since=datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp(),
        by="config_set",
        limit=10_000,
    )


TABLE = StatsTable(
    totals={"sent": 121, "delivered": 104, "bounced:Permanent": 12, "complained": 1},
    groups={
        "marketing": {
            "sent": 100,
            "delivered": 90,
            "bounced:Permanent": 6,
            "bounced:Transient": 4,
            "complained": 1,
        },
        "receipts": {"sent": 20, "delivered": 14, "bounced:Permanent": 5},
        "": {"sent": 1, "bounced:Permanent": 1},
    },
)


def test_the_answer_has_every_set_its_rates_statuses_and_the_thresholds() -> None:
    data = report(ReputationQuery(), TABLE, now=NOW)
    assert data["window"] == "7d"
    assert (data["since"], data["until"]) == ("2026-11-23T12:00:00Z", "2026-11-30T12:30:00Z")
    assert data["thresholds"] == {
        "bounce": {"warning": 0.05, "at_risk": 0.1},
        "complaint": {"warning": 0.001, "at_risk": 0.005},
    }
    assert [e["config_set"] for e in data["config_sets"]] == [None, "marketing", "receipts"]
    marketing = data["config_sets"][1]
    assert marketing == {
        "config_set": "marketing",
        "bounce": {"sent": 100, "permanent": 6, "rate": 0.06, "status": "warning"},
        "complaint": {"delivered": 90, "complained": 1, "rate": 0.011111, "status": "at_risk"},
    }
    assert data["config_sets"][2]["bounce"]["status"] == "at_risk"  # 25 %
    assert data["config_sets"][0]["complaint"] == {
        "delivered": 0,
        "complained": 0,
        "rate": None,
        "status": "healthy",
    }
    assert data["total"]["bounce"] == {
        "sent": 121,
        "permanent": 12,
        "rate": 0.099174,
        "status": "warning",
    }


def test_a_set_asked_for_is_answered_even_without_mail() -> None:
    data = report(ReputationQuery(config_set="quiet"), StatsTable(totals={}), now=NOW)
    assert data["config_set"] == "quiet"
    [entry] = data["config_sets"]
    assert entry["config_set"] == "quiet"
    assert entry["bounce"] == {"sent": 0, "permanent": 0, "rate": None, "status": "healthy"}


def test_the_table_shows_percentages_statuses_and_the_thresholds() -> None:
    text = format_table(report(ReputationQuery(window=30 * 86400), TABLE, now=NOW))
    header, columns, *rows, footer = text.splitlines()
    assert header == (
        "reputation of all mail over the last 30d (rolling), "
        "from 2026-10-31T12:00:00Z until 2026-11-30T12:30:00Z"
    )
    assert columns.split() == [
        "set",
        "sent",
        "hard",
        "bounces",
        "bounce",
        "rate",
        "status",
        "delivered",
        "complaints",
        "complaint",
        "rate",
        "status",
    ]
    assert [row.split() for row in rows] == [
        ["(no", "set)", "1", "1", "100.00%", "at", "risk", "0", "0", "-", "healthy"],
        ["marketing", "100", "6", "6.00%", "warning", "90", "1", "1.11%", "at", "risk"],
        ["receipts", "20", "5", "25.00%", "at", "risk", "14", "0", "0.00%", "healthy"],
        ["total", "121", "12", "9.92%", "warning", "104", "1", "0.96%", "at", "risk"],
    ]
    assert footer == (
        "thresholds: bounce rate (hard bounces / sent) warning at 5%, at risk at 10%; "
        "complaint rate (complaints / delivered) warning at 0.1%, at risk at 0.5%"
    )
    one = format_table(report(ReputationQuery(config_set="receipts"), TABLE, now=NOW))
    assert "configuration set receipts" in one
    assert "total" not in one  # one set: its row is the total
