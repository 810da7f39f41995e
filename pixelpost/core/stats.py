"""The response funnel: what a statistics query asks, and its answer as JSON or a table.

The store keeps counters per hour (see `pixelpost.store.sqlite.statistics`); this module
reads a query from the API's parameters or the command line, and turns the counters
into the funnel: sent, delivered, bounced by type, complained, opened and clicked
(total and unique, people and machines apart), engaged (copies a person opened or
clicked), unsubscribed by source, and the rates. The rates count people only: an open
rate that Apple's prefetching can push to 100% tells a sender nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pixelpost.core.values import parse_count, parse_duration
from pixelpost.errors import PixelpostError

Grouping = Literal["hour", "day", "link", "tag", "config_set"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)
PARAMETERS = ("config_set", "tag", "since", "until", "by", "limit")
LIMIT_DEFAULT = 100
LIMIT_MAX = 10_000
HOURS_MAX = 31 * 24
"""Most hours by=hour answers (the days' counters answer longer ranges, by=day)."""
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()
BOUNCE_TYPES = ("Permanent", "Transient", "Undetermined")
UNSUBSCRIBE_SOURCES = ("UnsubscribeHeader", "UnsubscribeLink", "UnsubscribeMailto")
"""How a recipient unsubscribes: the List-Unsubscribe header (one click, RFC 8058), a
link in the message, or a mail to the header's mailto: address."""
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TAG = re.compile(r"[^:\s]{1,128}:\S{1,256}")
_PLAIN = (
    "sent",
    "delivered",
    "delayed",
    "rejected",
    "rendering_failures",
    "complained",
    "suppressed",
)
"""Counted as they are; `suppressed`: copies not sent because their recipient is on the
suppression list (among the Permanent bounces too, as SES reports them)."""


class StatsQueryError(PixelpostError):
    """A parameter of a statistics query is not usable; the message names it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsQuery:
    """Which counters to sum, and how to group them."""

    config_set: str | None = None
    tag: str | None = None
    """A message tag, "name:value"."""
    since: float | None = None
    """A Unix time, counted from the start of its hour."""
    until: float | None = None
    """A Unix time, exclusive."""
    by: Grouping | None = None
    limit: int = LIMIT_DEFAULT
    """Most groups returned by link, tag or configuration set (by hour or day, the
    range bounds them)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsTable:
    """Counters by metric name, in total and per group key (an hour's or day's Unix time,
    a link, a tag, or a configuration set with '' for mail without one)."""

    totals: dict[str, int]
    groups: dict[str | int, dict[str, int]] = field(default_factory=dict)


def parse_time(text: str, *, now: float, name: str) -> float:
    """A Unix time from an ISO 8601 date or time (UTC unless it says otherwise), or from
    a duration meaning that long ago ("24h", "7d")."""
    text = text.strip()
    try:
        at = now - parse_duration(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise StatsQueryError(
                f"{name}: {text[:64]!r} is neither a date or time (2026-11-29, "
                "2026-11-29T13:00:00Z) nor a duration ago (24h, 7d)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        at = when.timestamp()
    if not _EARLIEST <= at < _LATEST:
        raise StatsQueryError(f"{name}: {text[:64]!r} is not between the years 2000 and 9000")
    return at


def parse_config_set(text: str | None) -> str | None:
    """The `config_set` parameter: a configuration set's name, or None for all mail."""
    if not text:
        return None
    if not _NAME.fullmatch(text):
        raise StatsQueryError(f"config_set: {text[:80]!r} is not a configuration set name")
    return text


def parse_query(params: Mapping[str, str], *, now: float) -> StatsQuery:
    """A query from API parameters or command-line options; StatsQueryError names the
    first that is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise StatsQueryError(
                f"{name[:64]}: unknown parameter (known: {', '.join(PARAMETERS)})"
            )
    config_set = parse_config_set(params.get("config_set"))
    tag = params.get("tag") or None
    if tag is not None and not _TAG.fullmatch(tag):
        raise StatsQueryError(f"tag: {tag[:80]!r} is not a tag (write it name:value)")
    since = parse_time(params["since"], now=now, name="since") if params.get("since") else None
    until = parse_time(params["until"], now=now, name="until") if params.get("until") else None
    if since is not None and until is not None and since >= until:
        raise StatsQueryError("since: must be before until")
    by = params.get("by") or None
    if by is not None and by not in GROUPINGS:
        raise StatsQueryError(f"by: {by[:40]!r} is not one of {', '.join(GROUPINGS)}")
    if by == "tag" and tag is not None:
        raise StatsQueryError("by: by=tag groups by every tag, so it cannot take tag= too")
    if by == "hour" and (
        since is None or (until if until is not None else now) - since > HOURS_MAX * 3600
    ):
        raise StatsQueryError(
            f"by: by=hour answers at most {HOURS_MAX // 24} days; give since= within that "
            "(since=24h, since=7d) or ask by=day"
        )
    limit_text = params.get("limit") or str(LIMIT_DEFAULT)
    try:
        limit = parse_count(limit_text, low=1, high=LIMIT_MAX)
    except ValueError:
        raise StatsQueryError(
            f"limit: {limit_text[:20]!r} is not a number from 1 to {LIMIT_MAX}"
        ) from None
    return StatsQuery(
        config_set=config_set,
        tag=tag,
        since=since,
        until=until,
        by=by,  # type: ignore[arg-type]
        limit=limit,
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _reasons(metrics: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {
        name.removeprefix(prefix): value
        for name, value in sorted(metrics.items())
        if name.startswith(prefix)
    }


def counts(metrics: Mapping[str, int]) -> dict[str, Any]:
    """The funnel, from counters by metric name."""

    def get(name: str) -> int:
        return metrics.get(name, 0)

    bounced = {kind: get(f"bounced:{kind}") for kind in BOUNCE_TYPES}
    bounced.update(_reasons(metrics, "bounced:"))
    opened_human, opened_machine = get("opens:human"), get("opens:machine")
    clicked_human, clicked_bot = get("clicks:human"), get("clicks:bot")
    opened = {
        "total": opened_human + opened_machine,
        "unique": get("unique_opens"),
        "human": {
            "total": opened_human,
            "unique": get("unique_opens:human"),
            "proxied": get("opens:proxied"),
        },
        "machine": {
            "total": opened_machine,
            "unique": get("unique_opens:machine"),
            "reasons": _reasons(metrics, "opens:machine:"),
        },
    }
    clicked = {
        "total": clicked_human + clicked_bot,
        "unique": get("unique_clicks"),
        "human": {"total": clicked_human, "unique": get("unique_clicks:human")},
        "bot": {
            "total": clicked_bot,
            "unique": get("unique_clicks:bot"),
            "reasons": _reasons(metrics, "clicks:bot:"),
        },
    }
    # By source, as bounces are by type. "total" counts every unsubscribe, "unique" each
    # copy once: one that unsubscribes, resubscribes and unsubscribes again is 2 and 1.
    by_source = {source: get(f"unsubscribed:{source}") for source in UNSUBSCRIBE_SOURCES}
    by_source.update(_reasons(metrics, "unsubscribed:"))
    unsubscribed = {
        "total": sum(by_source.values()),
        "unique": get("unique_unsubscribes"),
        **by_source,
    }
    delivered = get("delivered")
    return {
        **{name: get(name) for name in _PLAIN},
        "bounced": {"total": sum(bounced.values()), **bounced},
        "opened": opened,
        "clicked": clicked,
        "engaged": get("engaged"),
        "unsubscribed": unsubscribed,
        "resubscribed": get("resubscribed"),
        "rates": {
            "delivery": _rate(delivered, get("sent")),
            "open": _rate(get("unique_opens:human"), delivered),
            "click": _rate(get("unique_clicks:human"), delivered),
            "click_to_open": _rate(get("unique_clicks:human"), get("unique_opens:human")),
            "machine_open_share": _rate(opened_machine, opened_human + opened_machine),
            "bot_click_share": _rate(clicked_bot, clicked_human + clicked_bot),
            "engagement": _rate(get("engaged"), delivered),
            "unsubscribe": _rate(get("unique_unsubscribes"), delivered),
        },
    }


def iso(at: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC, to the second."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(by: Grouping, key: str | int) -> str | None:
    if by == "hour":
        return iso(float(key))
    if by == "day":
        return datetime.fromtimestamp(float(key), UTC).strftime("%Y-%m-%d")
    if by == "config_set" and key == "":
        return None
    return str(key)


def _order(by: Grouping, key: str | int, metrics: Mapping[str, int]) -> tuple[Any, ...]:
    if by == "link":
        return (
            -metrics.get("unique_clicks:human", 0),
            -metrics.get("clicks:human", 0),
            -metrics.get("clicks:bot", 0),
            str(key),
        )
    return (key,) if by in ("hour", "day") else (str(key),)


def report(query: StatsQuery, table: StatsTable, *, now: float) -> dict[str, Any]:
    """The answer to `query` as JSON-ready data (the API's and `pixelpost stats --json`)."""
    groups: list[dict[str, Any]] = []
    if query.by is not None:
        by = query.by
        ordered = sorted(table.groups.items(), key=lambda item: _order(by, *item))
        if by not in ("hour", "day"):
            ordered = ordered[: query.limit]
        groups = [{"key": _key(by, key), **counts(metrics)} for key, metrics in ordered]
    return {
        "config_set": query.config_set,
        "tag": query.tag,
        "since": iso(query.since // 3600 * 3600) if query.since is not None else None,
        "until": iso(query.until if query.until is not None else now),
        "by": query.by,
        "totals": counts(table.totals),
        "groups": groups,
    }


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


_COLUMNS = (
    ("sent", lambda c: c["sent"]),
    ("delivered", lambda c: c["delivered"]),
    ("bounced", lambda c: c["bounced"]["total"]),
    ("complained", lambda c: c["complained"]),
    ("opened", lambda c: c["opened"]["human"]["unique"]),
    ("machine opens", lambda c: c["opened"]["machine"]["total"]),
    ("clicked", lambda c: c["clicked"]["human"]["unique"]),
    ("bot clicks", lambda c: c["clicked"]["bot"]["total"]),
    ("engaged", lambda c: c["engaged"]),
    ("unsubscribed", lambda c: c["unsubscribed"]["unique"]),
    ("open rate", lambda c: _percent(c["rates"]["open"])),
    ("click rate", lambda c: _percent(c["rates"]["click"])),
    ("CTOR", lambda c: _percent(c["rates"]["click_to_open"])),
    ("engagement", lambda c: _percent(c["rates"]["engagement"])),
    ("unsub. rate", lambda c: _percent(c["rates"]["unsubscribe"])),
)


def format_table(data: Mapping[str, Any]) -> str:
    """`report`'s answer as a text table: one row per group, then the total. "opened",
    "clicked" and "engaged" count copies people opened, clicked, or either;
    "unsubscribed" copies unsubscribed."""
    label = {None: "", "config_set": "set"}.get(data["by"], data["by"] or "")
    rows: list[list[str]] = [[label or "", *(name for name, _ in _COLUMNS)]]
    for group in data["groups"]:
        key = group["key"] if group["key"] is not None else "(no set)"
        rows.append([str(key)[:60], *(str(get(group)) for _, get in _COLUMNS)])
    rows.append(["total", *(str(get(data["totals"])) for _, get in _COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    scope = [
        f"configuration set {data['config_set']}" if data["config_set"] else "all mail",
        f"tag {data['tag']}" if data["tag"] else None,
        f"since {data['since']}" if data["since"] else None,
        f"until {data['until']}",
    ]
    header = ", ".join(part for part in scope if part)
    totals = data["totals"]
    reasons = {
        **{f"open: {k}": v for k, v in totals["opened"]["machine"]["reasons"].items()},
        **{f"click: {k}": v for k, v in totals["clicked"]["bot"]["reasons"].items()},
    }
    footers = []
    if reasons:
        footers.append("machines: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    unsubscribed = totals["unsubscribed"]
    if unsubscribed["total"] or totals["resubscribed"]:
        sources = [(k, v) for k, v in unsubscribed.items() if k not in ("total", "unique")]
        footers.append(
            f"unsubscribes: {unsubscribed['total']} ("
            + ", ".join(f"{k} {v}" for k, v in sources)
            + f"), resubscribes: {totals['resubscribed']}"
        )
    legend = (
        "opened, clicked: copies people opened or clicked; engaged: either; "
        "unsubscribed: copies; machine opens, bot clicks: all"
    )
    return "\n".join([header, *lines, legend, *footers]) + "\n"
