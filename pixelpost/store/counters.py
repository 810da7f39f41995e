"""Reading the statistics counters, for every store: which periods cover a query's
range, and the one SELECT that sums them (pixelpost.store.sqlite.statistics and
pixelpost.store.postgresql.statistics run it, each with its own placeholders).

Each counter is kept per hour and per day: a range reads whole days from the days'
counters and only the hours at either end from the hours'.
"""

from __future__ import annotations

from collections.abc import Callable

from pixelpost.core.stats import Grouping, StatsQuery

HOUR = 3600
DAY = 86400
_GROUP_COLUMNS: dict[Grouping, str] = {
    "hour": "bucket",
    "day": "bucket / 86400 * 86400",
    "link": "link",
    "tag": "tag",
    "config_set": "config_set",
}

Span = tuple[int | None, int | None]
"""Buckets from (inclusive) and to (exclusive); None is open."""


def spans(query: StatsQuery) -> tuple[list[Span], Span | None]:
    """The hours and the days whose counters together cover the query's range: whole
    days from the days' counters, and only the hours at either end from the hours'."""
    since = int(query.since // HOUR * HOUR) if query.since is not None else None
    until = -int(-query.until // HOUR * HOUR) if query.until is not None else None
    if query.by == "hour":
        return [(since, until)], None
    first_day = -(-since // DAY) * DAY if since is not None else None
    last_day = until // DAY * DAY if until is not None else None
    if first_day is not None and last_day is not None and first_day >= last_day:
        return [(since, until)], None  # within a day or two: hours only
    hours: list[Span] = []
    if since is not None and first_day is not None and since < first_day:
        hours.append((since, first_day))
    if until is not None and last_day is not None and last_day < until:
        hours.append((last_day, until))
    return hours, (first_day, last_day)


def sum_query(
    query: StatsQuery, by: Grouping | None, *, table: str, placeholder: Callable[[int], str]
) -> tuple[str, list[object]]:
    """The SELECT of (key, metric, sum) that `query` asks for, grouped `by`, from the
    counters in `table`; `placeholder(n)` writes the n-th parameter (from 1)."""
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return placeholder(len(params))

    key = _GROUP_COLUMNS[by] if by is not None else "''"
    hours, days = spans(query)
    parts = [(HOUR, span) for span in hours] + ([(DAY, days)] if days is not None else [])
    selects = []
    for period, (low, high) in parts:
        clauses = [f"period = {param(period)}"]
        clauses.append("tag > ''" if by == "tag" else f"tag = {param(query.tag or '')}")
        clauses.append("link > ''" if by == "link" else "link = ''")
        if query.config_set is not None:
            clauses.append(f"config_set = {param(query.config_set)}")
        if low is not None:
            clauses.append(f"bucket >= {param(low)}")
        if high is not None:
            clauses.append(f"bucket < {param(high)}")
        where = " AND ".join(clauses)
        selects.append(f"SELECT {key} AS key, metric, value FROM {table} WHERE {where}")  # noqa: S608 (fixed clauses)
    union = " UNION ALL ".join(selects)
    return f"SELECT key, metric, sum(value) FROM ({union}) AS c GROUP BY key, metric", params  # noqa: S608 (fixed clauses)
