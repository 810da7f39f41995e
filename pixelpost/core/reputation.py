"""Sender reputation as SES's account dashboard shows it: per configuration set, the
bounce rate and the complaint rate over a rolling window, each with a status against
SES's thresholds ("healthy", "warning" when SES would put the account under review,
"at_risk" when it might pause sending).

    bounce rate     = Permanent bounces / sent       warning 5 %,   at risk 10 %
    complaint rate  = complaints / delivered         warning 0.1 %, at risk 0.5 %

Only Permanent (hard) bounces count: SES leaves Transient and Undetermined bounces (a
full mailbox, a greylisting server) out of the rate, as they say nothing about the list.
SES divides complaints by the sends to providers that report complaints; pixelpost does
not know which do, so it divides by the copies delivered. A rate over no mail is null,
and healthy. The figures come from the statistics' hourly counters
(`pixelpost.core.stats`); this module only reads a query and does the arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pixelpost.core.stats import (
    LIMIT_MAX,
    StatsQuery,
    StatsQueryError,
    StatsTable,
    iso,
    parse_config_set,
)
from pixelpost.core.values import DAY, HOUR, format_duration, parse_duration

Status = Literal["healthy", "warning", "at_risk"]
BOUNCE_WARNING = 0.05
BOUNCE_AT_RISK = 0.10
COMPLAINT_WARNING = 0.001
COMPLAINT_AT_RISK = 0.005
THRESHOLDS = {
    "bounce": {"warning": BOUNCE_WARNING, "at_risk": BOUNCE_AT_RISK},
    "complaint": {"warning": COMPLAINT_WARNING, "at_risk": COMPLAINT_AT_RISK},
}
"""The thresholds as the API answers them."""

WINDOW_DEFAULT = 7 * DAY
"""The rolling window when none is asked for.

SES judges a rate over a "representative volume" of recent mail rather than a fixed
period, and says neither how much nor how long. Seven days is what we chose: long
enough to take in a weekly campaign and a week's weekday and weekend sending, so that
one quiet day does not swing the rates, and short enough that a bad list shows within
days and a cleaned one recovers within a week. Complaints come days after delivery, so
a window much shorter than a few days would often divide them by the wrong mail."""
WINDOW_MIN = HOUR
"""The counters are hourly: no window is shorter than one of them."""
WINDOW_MAX = 90 * DAY
PARAMETERS = ("config_set", "window")
RATE_DIGITS = 6
"""Decimals of a rate in JSON: enough to tell 0.1 % from 0.0999 %."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReputationQuery:
    """Whose reputation, over how long."""

    config_set: str | None = None
    """One configuration set; None: every set, and all mail together."""
    window: float = WINDOW_DEFAULT
    """Seconds back from now; the window starts at the start of that hour."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Reputation:
    """The figures of one configuration set (or of all mail) over a window."""

    sent: int
    permanent_bounces: int
    delivered: int
    complaints: int

    @property
    def bounce_rate(self) -> float | None:
        return rate(self.permanent_bounces, self.sent)

    @property
    def bounce_status(self) -> Status:
        return status(
            self.permanent_bounces, self.sent, warning=BOUNCE_WARNING, at_risk=BOUNCE_AT_RISK
        )

    @property
    def complaint_rate(self) -> float | None:
        return rate(self.complaints, self.delivered)

    @property
    def complaint_status(self) -> Status:
        return status(
            self.complaints, self.delivered, warning=COMPLAINT_WARNING, at_risk=COMPLAINT_AT_RISK
        )


def rate(part: int, whole: int) -> float | None:
    """`part` / `whole`, or None over nothing."""
    return round(part / whole, RATE_DIGITS) if whole else None


def status(part: int, whole: int, *, warning: float, at_risk: float) -> Status:
    """Where `part` / `whole` stands: a rate at a threshold has reached it, as in SES
    ("5 % or greater"). Compared exactly, not in floating point: 5 of 100 is 5 %."""
    if not whole:
        return "healthy"
    share = Fraction(part, whole)
    if share >= Fraction(repr(at_risk)):
        return "at_risk"
    if share >= Fraction(repr(warning)):
        return "warning"
    return "healthy"


def assess(metrics: Mapping[str, int]) -> Reputation:
    """The reputation figures from the statistics' counters by metric name."""
    return Reputation(
        sent=metrics.get("sent", 0),
        # A copy not sent because its recipient is suppressed is a Permanent bounce
        # (OnAccountSuppressionList) that no mailbox provider saw: SES leaves it out.
        permanent_bounces=max(
            0, metrics.get("bounced:Permanent", 0) - metrics.get("suppressed", 0)
        ),
        delivered=metrics.get("delivered", 0),
        complaints=metrics.get("complained", 0),
    )


def parse_window(text: str) -> float:
    """Seconds in a window such as "7d" or "24h", from 1 hour to 90 days."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise StatsQueryError(
            f"window: {text[:40]!r} is not a duration (write it like 24h, 7d or 30d)"
        ) from None
    if not WINDOW_MIN <= seconds <= WINDOW_MAX:
        raise StatsQueryError(
            f"window: {text[:40]!r} is not from {format_duration(WINDOW_MIN)} "
            f"to {format_duration(WINDOW_MAX)}"
        )
    return seconds


def parse_query(params: Mapping[str, str]) -> ReputationQuery:
    """A query from API parameters or command-line options; StatsQueryError names the
    first that is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise StatsQueryError(
                f"{name[:64]}: unknown parameter (known: {', '.join(PARAMETERS)})"
            )
    window = params.get("window")
    return ReputationQuery(
        config_set=parse_config_set(params.get("config_set")),
        window=parse_window(window) if window else WINDOW_DEFAULT,
    )


def since(query: ReputationQuery, *, now: float) -> float:
    """Where the window starts: the start of the hour `query.window` ago."""
    return (now - query.window) // HOUR * HOUR


def stats_query(query: ReputationQuery, *, now: float) -> StatsQuery:
    """The statistics query whose counters `report` needs: the window's, per set."""
    return StatsQuery(
        config_set=query.config_set, since=since(query, now=now), by="config_set", limit=LIMIT_MAX
    )


def figures(reputation: Reputation) -> dict[str, Any]:
    """One standing as JSON: each rate with its parts and its status."""
    return {
        "bounce": {
            "sent": reputation.sent,
            "permanent": reputation.permanent_bounces,
            "rate": reputation.bounce_rate,
            "status": reputation.bounce_status,
        },
        "complaint": {
            "delivered": reputation.delivered,
            "complained": reputation.complaints,
            "rate": reputation.complaint_rate,
            "status": reputation.complaint_status,
        },
    }


def report(query: ReputationQuery, table: StatsTable, *, now: float) -> dict[str, Any]:
    """The answer to `query` from the counters of `stats_query` (the API's JSON and
    `pixelpost reputation --json`): one entry per configuration set, by name (null for
    mail sent without one), and all of them together in "total"."""
    groups = dict(table.groups)
    if query.config_set is not None:
        groups.setdefault(query.config_set, {})  # asked for: shown, even with no mail
    return {
        "config_set": query.config_set,
        "window": format_duration(query.window),
        "since": iso(since(query, now=now)),
        "until": iso(now),
        "thresholds": {kind: dict(levels) for kind, levels in THRESHOLDS.items()},
        "config_sets": [
            {"config_set": str(key) or None, **figures(assess(metrics))}
            for key, metrics in sorted(groups.items(), key=lambda item: str(item[0]))
        ],
        "total": figures(assess(table.totals)),
    }


def percent(value: float | None) -> str:
    """A rate for people, to a hundredth of a percent (the complaint thresholds are
    tenths of one); "-" for none."""
    return "-" if value is None else f"{value * 100:.2f}%"


def _threshold(value: float) -> str:
    return f"{value * 100:g}%"


STATUS_TEXT: dict[str, str] = {"healthy": "healthy", "warning": "warning", "at_risk": "at risk"}
_COLUMNS = (
    # (heading, figure, left-aligned)
    ("sent", lambda f: f["bounce"]["sent"], False),
    ("hard bounces", lambda f: f["bounce"]["permanent"], False),
    ("bounce rate", lambda f: percent(f["bounce"]["rate"]), False),
    ("status", lambda f: STATUS_TEXT[f["bounce"]["status"]], True),
    ("delivered", lambda f: f["complaint"]["delivered"], False),
    ("complaints", lambda f: f["complaint"]["complained"], False),
    ("complaint rate", lambda f: percent(f["complaint"]["rate"]), False),
    ("status", lambda f: STATUS_TEXT[f["complaint"]["status"]], True),
)


def format_table(data: Mapping[str, Any]) -> str:
    """`report`'s answer as a text table: one row per configuration set, then all mail,
    and the thresholds in a footer."""
    rows: list[list[str]] = [["set", *(name for name, _, _ in _COLUMNS)]]
    for entry in data["config_sets"]:
        name = entry["config_set"] if entry["config_set"] is not None else "(no set)"
        rows.append([name[:60], *(str(get(entry)) for _, get, _ in _COLUMNS)])
    if data["config_set"] is None:
        rows.append(["total", *(str(get(data["total"])) for _, get, _ in _COLUMNS)])
    left = [True, *(left for _, _, left in _COLUMNS)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if left[i] else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    scope = f"configuration set {data['config_set']}" if data["config_set"] else "all mail"
    header = (
        f"reputation of {scope} over the last {data['window']} (rolling), "
        f"from {data['since']} until {data['until']}"
    )
    bounce, complaint = data["thresholds"]["bounce"], data["thresholds"]["complaint"]
    footer = (
        f"thresholds: bounce rate (hard bounces / sent) warning at {_threshold(bounce['warning'])}"
        f", at risk at {_threshold(bounce['at_risk'])}; complaint rate (complaints / delivered) "
        f"warning at {_threshold(complaint['warning'])}, "
        f"at risk at {_threshold(complaint['at_risk'])}"
    )
    return "\n".join([header, *lines, footer]) + "\n"
