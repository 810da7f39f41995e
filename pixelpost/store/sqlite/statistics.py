"""The statistics tables of the SQLite store: rolling events up into them, reading them,
and purging what retention no longer keeps.

A roll-up reads a range of the log and adds to one counter per (tag, link, configuration
set, hour, metric), in the outbox file. The metrics:

    sent delivered delayed rejected rendering_failures complained
    bounced:<bounceType>
    opens:human opens:machine opens:machine:<reason> opens:proxied
    clicks:human clicks:bot clicks:bot:<reason>
    unique_opens unique_opens:human unique_opens:machine           (copies, at their first)
    unique_clicks unique_clicks:human unique_clicks:bot

Clicks are also counted per link (link = the URL), uniques there per copy and link.
A unique count goes to the hour of the copy's first such event: unique opens over any
period are the copies first opened in it. Each counter is kept per hour and per day: a
query over weeks reads the days' counters and only the hours at its ends. It all runs
in SQLite, in a few statements per batch.
"""

from __future__ import annotations

import aiosqlite

from pixelpost.core.stats import Grouping, StatsQuery, StatsTable

# One row per event of the batch, with what the counters need (temp tables are the
# connection's own).
_SETUP = (
    "CREATE TEMP TABLE IF NOT EXISTS stats_facts (message_id TEXT, hour INTEGER,"
    " config_set TEXT, tags TEXT, kind TEXT, class TEXT, reason TEXT, proxy TEXT, link TEXT,"
    " bounce_type TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS stats_rows (hour INTEGER, config_set TEXT, tags TEXT,"
    " link TEXT, metric TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS stats_candidates (message_id TEXT, what TEXT,"
    " hour INTEGER, config_set TEXT, tags TEXT, link TEXT, metric TEXT,"
    " PRIMARY KEY (message_id, what))",
    "DELETE FROM temp.stats_facts",
    "DELETE FROM temp.stats_rows",
    "DELETE FROM temp.stats_candidates",
)
_FACTS = (
    "INSERT INTO temp.stats_facts SELECT e.message_id,"
    " CAST(e.created_at / 3600 AS INTEGER) * 3600, coalesce(m.config_set, ''), m.tags, e.type,"
    " CASE e.type WHEN 'open' THEN iif(e.detail ->> '$.machine', 'machine', 'human')"
    "  WHEN 'click' THEN iif(e.detail ->> '$.bot', 'bot', 'human') END,"
    " CASE e.type WHEN 'open' THEN e.detail ->> '$.machineReason'"
    "  WHEN 'click' THEN e.detail ->> '$.botReason' END,"
    " iif(e.type = 'open', e.detail ->> '$.proxy', NULL),"
    " iif(e.type = 'click', e.detail ->> '$.link', NULL),"
    " iif(e.type = 'bounce', e.detail ->> '$.bounceType', NULL)"
    " FROM main.events AS e JOIN main.messages AS m ON m.id = e.message_id"
    " WHERE e.seq > ? AND e.seq <= ?"
)
_COUNTS = (
    "INSERT INTO temp.stats_rows (hour, config_set, tags, link, metric)"
    " SELECT hour, config_set, tags, '', CASE kind"
    "  WHEN 'send' THEN 'sent' WHEN 'delivery' THEN 'delivered'"
    "  WHEN 'delivery_delay' THEN 'delayed' WHEN 'reject' THEN 'rejected'"
    "  WHEN 'rendering_failure' THEN 'rendering_failures' WHEN 'complaint' THEN 'complained'"
    "  WHEN 'bounce' THEN 'bounced:' || coalesce(bounce_type, 'Undetermined')"
    "  WHEN 'open' THEN 'opens:' || class WHEN 'click' THEN 'clicks:' || class END"
    " FROM temp.stats_facts WHERE kind != 'subscription'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:machine:' || coalesce(reason, 'other')"
    " FROM temp.stats_facts WHERE kind = 'open' AND class = 'machine'"
    " UNION ALL SELECT hour, config_set, tags, '', 'clicks:bot:' || coalesce(reason, 'other')"
    " FROM temp.stats_facts WHERE kind = 'click' AND class = 'bot'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:proxied'"
    " FROM temp.stats_facts WHERE kind = 'open' AND class = 'human' AND proxy IS NOT NULL"
    " UNION ALL SELECT hour, config_set, tags, link, 'clicks:' || class"
    " FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
)
# What each event could count towards as a unique: per copy, and per copy and link.
_CANDIDATES = (
    "INSERT OR IGNORE INTO temp.stats_candidates"
    " SELECT message_id, what, min(hour), config_set, tags, link, metric FROM ("
    "  SELECT message_id, kind AS what, hour, config_set, tags, '' AS link,"
    "   'unique_' || kind || 's' AS metric"
    "  FROM temp.stats_facts WHERE kind IN ('open', 'click')"
    "  UNION ALL SELECT message_id, kind || ':' || class, hour, config_set, tags, '',"
    "   'unique_' || kind || 's:' || class"
    "  FROM temp.stats_facts WHERE kind IN ('open', 'click')"
    "  UNION ALL SELECT message_id, 'click' || char(31) || link, hour, config_set, tags, link,"
    "   'unique_clicks'"
    "  FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    "  UNION ALL SELECT message_id, 'click:' || class || char(31) || link, hour, config_set,"
    "   tags, link, 'unique_clicks:' || class"
    "  FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    " ) WHERE true GROUP BY message_id, what"
)
_FIRSTS = (
    "INSERT INTO temp.stats_rows (hour, config_set, tags, link, metric)"
    " SELECT hour, config_set, tags, link, metric FROM temp.stats_candidates AS c"
    " WHERE NOT EXISTS (SELECT 1 FROM outbox.stats_firsts AS f"
    "  WHERE f.message_id = c.message_id AND f.what = c.what)",
    "INSERT OR IGNORE INTO outbox.stats_firsts (message_id, what)"
    " SELECT message_id, what FROM temp.stats_candidates",
)
# Every row counts for all of its set's mail (tag '') and for each of the copy's tags,
# in its hour and in its day.
_ADD = (
    "INSERT INTO outbox.stats (period, tag, link, config_set, bucket, metric, value)"
    " SELECT p.period, tag, link, config_set, hour / p.period * p.period, metric, count(*)"
    " FROM ("
    "  SELECT '' AS tag, link, config_set, hour, metric FROM temp.stats_rows"
    "  UNION ALL SELECT j.value, r.link, r.config_set, r.hour, r.metric"
    "  FROM temp.stats_rows AS r, json_each(r.tags) AS j"
    " ), (SELECT 3600 AS period UNION ALL SELECT 86400) AS p"
    " WHERE true GROUP BY 1, 2, 3, 4, 5, 6"
    " ON CONFLICT (period, tag, link, config_set, bucket, metric)"
    " DO UPDATE SET value = value + excluded.value"
)


async def roll_up_next(connection: aiosqlite.Connection, limit: int) -> int:
    """Add up to `limit` events not counted yet to the statistics and move the cursor
    past them (in the caller's transaction); returns how many."""
    # The cursor is written first, so that the outbox is locked before the log is read.
    async with connection.execute(
        "UPDATE outbox.cursors SET seq = seq WHERE name = 'rolled_up' RETURNING seq"
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    after = int(row[0])
    async with connection.execute("SELECT coalesce(max(seq), 0) FROM main.events") as cursor:
        newest_row = await cursor.fetchone()
    newest = int(newest_row[0]) if newest_row else 0
    if newest <= after:
        return 0
    upto = min(newest, after + limit)
    await roll_up(connection, after, upto)
    await connection.execute("UPDATE outbox.cursors SET seq = ? WHERE name = 'rolled_up'", (upto,))
    return upto - after


async def roll_up(connection: aiosqlite.Connection, after: int, upto: int) -> None:
    """Add the events with `after` < seq <= `upto` to the statistics (in the caller's
    transaction)."""
    for statement in _SETUP:
        await connection.execute(statement)
    await connection.execute(_FACTS, (after, upto))
    await connection.execute(_COUNTS)
    await connection.execute(_CANDIDATES)
    for statement in _FIRSTS:
        await connection.execute(statement)
    await connection.execute(_ADD)


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


def _part(
    query: StatsQuery, by: Grouping | None, period: int, span: Span
) -> tuple[str, list[object]]:
    key = _GROUP_COLUMNS[by] if by is not None else "''"
    clauses = ["period = ?"]
    params: list[object] = [period]
    if by == "tag":
        clauses.append("tag > ''")
    else:
        clauses.append("tag = ?")
        params.append(query.tag or "")
    clauses.append("link > ''" if by == "link" else "link = ''")
    if query.config_set is not None:
        clauses.append("config_set = ?")
        params.append(query.config_set)
    low, high = span
    if low is not None:
        clauses.append("bucket >= ?")
        params.append(low)
    if high is not None:
        clauses.append("bucket < ?")
        params.append(high)
    where = " AND ".join(clauses)
    return f"SELECT {key} AS key, metric, value FROM outbox.stats WHERE {where}", params  # noqa: S608 (fixed clauses)


async def _sum(
    connection: aiosqlite.Connection, query: StatsQuery, by: Grouping | None
) -> dict[str | int, dict[str, int]]:
    hours, days = spans(query)
    parts = [_part(query, by, HOUR, span) for span in hours]
    if days is not None:
        parts.append(_part(query, by, DAY, days))
    sql = " UNION ALL ".join(part for part, _ in parts)
    params = [param for _, part_params in parts for param in part_params]
    found: dict[str | int, dict[str, int]] = {}
    async with connection.execute(
        f"SELECT key, metric, sum(value) FROM ({sql}) GROUP BY key, metric",  # noqa: S608 (fixed clauses)
        params,
    ) as cursor:
        for key, metric, value in await cursor.fetchall():
            found.setdefault(key, {})[metric] = int(value)
    return found


async def read(connection: aiosqlite.Connection, query: StatsQuery) -> StatsTable:
    """The counters that `query` asks for, summed: the totals, and per group."""
    totals = (await _sum(connection, query, None)).get("", {})
    groups = await _sum(connection, query, query.by) if query.by is not None else {}
    return StatsTable(totals=totals, groups=groups)
