"""Statistics queries over a million events, side by side with counting the log itself.

    .venv/bin/python -m bench.stats [--events 1000000] [--repeat 20] [--store PATH]
                                    [--store-url URL] [--target-ms 200] [--baseline-runs N]

Records `--events` events through the store's own writer (`record` for the copies and
their Send, Delivery and Bounce, `record_hits` for opens and clicks, as the relay and
the tracker do): copies over 30 days in 3 configuration sets, with 0 to 2 message tags
and 12 of 20 links each; opens by people (some through Gmail's proxy) and by Apple's
prefetching, clicks by people and by link scanners. Then times the roll-up until it has
caught up, and each statistics query `--repeat` times, through the store and through
`GET /api/v1/stats` on loopback (no warm-up: the first answer counts). The baseline
counts the same totals with one SQL query over the events joined to their copies, no
roll-up; its numbers must equal the roll-up's (and, for all mail, what was planned).
Target (issue 7): with one million events, every query answers in under 200 ms.

The store is SQLite in a temporary folder, unless `--store PATH` (a SQLite store kept
there) or `--store-url URL` (a store URL as `store.url` takes it, such as
postgresql://127.0.0.1:5432/DB: the database must exist; the store is created in it
and kept) names one. A store that already holds events is used as it is (nothing is
added).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import asyncpg
from aiohttp import web

from bench.stores import count, is_postgresql, open_url, sqlite_url, store_config
from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, bounce_event, delivery_event, dumps, send_event
from pixelpost.core.ids import new_message_id
from pixelpost.core.mail import common_headers, mail_object
from pixelpost.core.stats import StatsQuery, parse_query, report
from pixelpost.store import Hit, MessageRecord, Store
from pixelpost.store.postgresql.database import describe as describe_postgresql
from pixelpost.store.sqlite import outbox_path
from tracker.api import add_api
from tracker.auth import Access

TARGET_MS = 200.0
DAYS = 30
SPAN = DAYS * 86400
CONFIG_SETS = ("marketing", "news", "transactional")
CONFIG_SET_WEIGHTS = (6, 3, 1)
TAGS = (
    ("campaign", "spring"),
    ("campaign", "summer"),
    ("campaign", "fall"),
    ("segment", "vip"),
    ("segment", "trial"),
    ("list", "weekly"),
)
LINKS = tuple(
    f"https://shop.example.com/{page}?utm_source=newsletter"
    for page in (
        *(f"products/{n}" for n in range(1, 13)),
        *("sale", "new", "blog/spring", "blog/care", "account", "help", "stores", "unsubscribe"),
    )
)
LINKS_PER_COPY = 12
BOUNCE_RATE = 0.03
SCANNED_RATE = 0.3
"""Copies whose every link a mail security gateway follows."""
CHUNK = 50_000
"""Events per write to the store."""
PROGRESS_EVERY = 100_000
TOKEN = "bench-token"
SEED = 7

UA_APPLE = "Mozilla/5.0"
UA_GMAIL = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
UA_PEOPLE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Microsoft Outlook 16.0.17328; ms-office; "
    "MSOffice 16)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
)
UA_SCANNER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)

# What each planned item is; items are tuples (at, kind, copy index, *details).
SEND, DELIVERY, BOUNCE, OPEN, CLICK = range(5)
Item = tuple[Any, ...]

QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("totals, all mail", {}),
    ("totals, config_set=news", {"config_set": "news"}),
    ("totals, tag=campaign:spring", {"tag": "campaign:spring"}),
    ("by=hour, since=30d (720 groups)", {"by": "hour", "since": "30d", "limit": "1000"}),
    ("by=day", {"by": "day"}),
    ("by=link", {"by": "link"}),
    ("by=tag", {"by": "tag"}),
    ("by=config_set", {"by": "config_set"}),
    ("since=7d, by=day", {"since": "7d", "by": "day"}),
)

# The totals straight from the log: one pass over the events joined to their copies,
# the JSON of each open and click read for its classification.
NAIVE_METRICS = (
    "sent",
    "delivered",
    "bounced",
    "opens:human",
    "opens:machine",
    "opens:proxied",
    "unique_opens",
    "unique_opens:human",
    "unique_opens:machine",
    "clicks:human",
    "clicks:bot",
    "unique_clicks",
    "unique_clicks:human",
    "unique_clicks:bot",
)
_NAIVE_SQL = """
SELECT
  count(*) FILTER (WHERE type = 'send'),
  count(*) FILTER (WHERE type = 'delivery'),
  count(*) FILTER (WHERE type = 'bounce'),
  count(*) FILTER (WHERE type = 'open' AND NOT machine),
  count(*) FILTER (WHERE type = 'open' AND machine),
  count(*) FILTER (WHERE type = 'open' AND NOT machine AND proxy IS NOT NULL),
  count(DISTINCT CASE WHEN type = 'open' THEN message_id END),
  count(DISTINCT CASE WHEN type = 'open' AND NOT machine THEN message_id END),
  count(DISTINCT CASE WHEN type = 'open' AND machine THEN message_id END),
  count(*) FILTER (WHERE type = 'click' AND NOT machine),
  count(*) FILTER (WHERE type = 'click' AND machine),
  count(DISTINCT CASE WHEN type = 'click' THEN message_id END),
  count(DISTINCT CASE WHEN type = 'click' AND NOT machine THEN message_id END),
  count(DISTINCT CASE WHEN type = 'click' AND machine THEN message_id END)
FROM (
  SELECT e.type, e.message_id,
    CASE e.type WHEN 'open' THEN {machine} WHEN 'click' THEN {bot} END AS machine,
    CASE WHEN e.type = 'open' THEN {proxy} END AS proxy
  FROM events AS e JOIN messages AS m ON m.id = e.message_id
  WHERE {where}
) AS facts
"""
NAIVE_SQL = _NAIVE_SQL.format(
    machine="e.detail ->> '$.machine'",
    bot="e.detail ->> '$.bot'",
    proxy="e.detail ->> '$.proxy'",
    where="(:config_set IS NULL OR m.config_set = :config_set)"
    " AND (:tag IS NULL OR EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = :tag))",
)
# PostgreSQL's log keeps the JSON as text and each copy's tags as an array.
NAIVE_SQL_POSTGRESQL = _NAIVE_SQL.format(
    machine="(e.detail::jsonb ->> 'machine')::boolean",
    bot="(e.detail::jsonb ->> 'bot')::boolean",
    proxy="e.detail::jsonb ->> 'proxy'",
    where="($1::text IS NULL OR m.config_set = $1) AND ($2::text IS NULL OR $2 = ANY(m.tags))",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Copy:
    """One recipient's copy of a message, and who reads it."""

    id: str
    config_set: str
    tags: dict[str, list[str]]
    recipient: str
    links: tuple[str, ...]


@dataclass(kw_only=True, slots=True)
class Plan:
    """What the store is to hold: the copies, and their events in time order."""

    copies: list[Copy] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


def _copy(rng: random.Random, at: float, index: int, mailbox: str) -> Copy:
    names: dict[str, list[str]] = {}
    for name, value in rng.sample(TAGS, rng.choice((0, 1, 1, 2))):
        names.setdefault(name, []).append(value)
    return Copy(
        id=new_message_id(at),
        config_set=rng.choices(CONFIG_SETS, CONFIG_SET_WEIGHTS)[0],
        tags=names,
        recipient=f"reader{index}@{mailbox}",
        links=tuple(rng.sample(LINKS, LINKS_PER_COPY)),
    )


def _people(
    rng: random.Random, index: int, delivered: float, copy: Copy, *, apple: bool, gmail: bool
) -> Iterator[Item]:
    """A person's opens (through Gmail's proxy for Gmail readers) and clicks."""
    if rng.random() >= (0.2 if apple else 0.5):
        return
    ip = f"198.51.{index % 200}.{index % 250 + 1}"
    user_agent = UA_GMAIL if gmail else rng.choice(UA_PEOPLE)
    at = delivered + rng.expovariate(1 / (4 * 3600))
    clicks = rng.randint(1, 4) if rng.random() < 0.4 else 0
    for _ in range(rng.randint(1, 12)):
        yield (at, OPEN, index, False, None, "gmail" if gmail else None, ip, user_agent)
        if clicks:
            clicks -= 1
            link = rng.choice(copy.links)
            yield (at + rng.uniform(3, 300), CLICK, index, False, None, link, ip, user_agent)
        at += rng.expovariate(1 / (12 * 3600))


def _scanner(rng: random.Random, index: int, delivered: float, copy: Copy) -> Iterator[Item]:
    """A mail security gateway following every link, each way the classifier tells."""
    ip = f"40.94.{index % 200}.{index % 250 + 1}"
    kind = rng.choices(("click_after_delivery", "head_request", "link_burst"), (2, 1, 1))[0]
    start = delivered + rng.uniform(20, 600)
    for n, link in enumerate(copy.links):
        if kind == "click_after_delivery":
            yield (delivered + rng.uniform(0.5, 9), CLICK, index, True, kind, link, ip, UA_SCANNER)
        elif kind == "head_request":
            at = delivered + rng.uniform(30, 3600)
            yield (at, CLICK, index, True, kind, link, ip, UA_SCANNER)
        else:
            # The first click of a burst looks like a person's, as it does to the tracker.
            machine = n > 0
            reason = kind if machine else None
            yield (start + n * 0.2, CLICK, index, machine, reason, link, ip, UA_SCANNER)


def plan(events: int, now: float, rng: random.Random) -> Plan:
    """Copies sent over the last `DAYS` days, until their events number `events`."""
    result = Plan()
    start = now - SPAN
    while len(result.items) < events:
        index = len(result.copies)
        sent = start + rng.random() * SPAN
        mailbox = rng.choices(("icloud.com", "gmail.com", "example.org"), (45, 30, 25))[0]
        copy = _copy(rng, sent, index, mailbox)
        result.copies.append(copy)
        result.items.append((sent, SEND, index))
        delivered = sent + rng.uniform(0.2, 20)
        if rng.random() < BOUNCE_RATE:
            bounce_type = "Permanent" if rng.random() < 0.7 else "Transient"
            result.items.append((delivered, BOUNCE, index, bounce_type))
            continue
        result.items.append((delivered, DELIVERY, index))
        hits: list[Item] = []
        apple = mailbox == "icloud.com"
        if apple:
            ip = f"17.58.{index % 200}.{index % 250 + 1}"
            for _ in range(rng.randint(1, 3)):
                at = delivered + rng.uniform(2, 900)
                hits.append((at, OPEN, index, True, "apple_mpp", None, ip, UA_APPLE))
        hits.extend(
            _people(rng, index, delivered, copy, apple=apple, gmail=mailbox == "gmail.com")
        )
        if rng.random() < SCANNED_RATE:
            hits.extend(_scanner(rng, index, delivered, copy))
        result.items.extend(hit for hit in hits if hit[0] < now)
    # The last copy's last planned events go, so that the store holds `events` exactly.
    del result.items[events:]
    result.items.sort(key=lambda item: item[0])
    return result


def _mail(copy: Copy, at: float) -> str:
    headers = [
        ("From", "Example Shop <news@shop.example.com>"),
        ("To", copy.recipient),
        ("Subject", "Spring is here: 20% off everything"),
        ("Message-ID", f"<{copy.id}@shop.example.com>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", 'multipart/alternative; boundary="b1"'),
    ]
    block = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
    return dumps(
        mail_object(
            message_id=copy.id,
            sent_at=datetime.fromtimestamp(at, UTC),
            source="news@shop.example.com",
            destination=[copy.recipient],
            headers=headers,
            common=common_headers(block),
            config_set=copy.config_set,
            message_tags=copy.tags,
            source_ip="192.0.2.10",
            caller_identity="shop",
        )
    )


def _rows(
    items: list[Item], copies: list[Copy]
) -> tuple[list[MessageRecord], list[Event], list[Hit]]:
    messages: list[MessageRecord] = []
    events: list[Event] = []
    hits: list[Hit] = []
    for at, kind, index, *details in items:
        copy = copies[index]
        if kind >= OPEN:
            machine, reason, link_or_proxy, ip, user_agent = details
            if kind == OPEN:
                proxy, link, link_tags = link_or_proxy, None, None
            else:
                proxy, link, link_tags = None, link_or_proxy, "{}"
            kind_type = EventType.OPEN if kind == OPEN else EventType.CLICK
            hits.append(
                Hit(
                    kind=kind_type,
                    message_id=copy.id,
                    ip=ip,
                    user_agent=user_agent,
                    at=at,
                    link=link,
                    link_tags=link_tags,
                    machine=machine,
                    reason=reason,
                    proxy=proxy,
                )
            )
            continue
        when = datetime.fromtimestamp(at, UTC)
        if kind == SEND:
            messages.append(
                MessageRecord(
                    id=copy.id,
                    config_set=copy.config_set,
                    created_at=when,
                    mail=_mail(copy, at),
                )
            )
            events.append(send_event(copy.id, now=when))
        elif kind == DELIVERY:
            events.append(
                delivery_event(
                    copy.id,
                    recipients=[copy.recipient],
                    smtp_response="250 2.0.0 Ok: queued",
                    processing_ms=int(at * 1000) % 900 + 40,
                    reporting_mta="relay.shop.example.com",
                    now=when,
                )
            )
        else:
            events.append(
                bounce_event(
                    copy.id,
                    bounce_type=details[0],
                    bounce_subtype="General",
                    recipients=[(copy.recipient, "5.1.1", "smtp; 550 5.1.1 no such user")],
                    reporting_mta="relay.shop.example.com",
                    now=when,
                )
            )
    return messages, events, hits


async def fill(store: Store, events: int, now: float) -> tuple[float, Counter[str]]:
    """Plan and record `events` events; the seconds recording took, and the totals that
    were planned."""
    started = time.perf_counter()
    print(f"planning {events:,} events over {DAYS} days ...", flush=True)
    planned = plan(events, now, random.Random(SEED))
    expected = _expected(planned)
    print(
        f"  {len(planned.copies):,} copies, {len(planned.items):,} events, "
        f"planned in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    started = time.perf_counter()
    written = 0
    for offset in range(0, len(planned.items), CHUNK):
        messages, log_events, hits = _rows(planned.items[offset : offset + CHUNK], planned.copies)
        # The copies and their own events first, then the hits: the log's order is time's.
        await store.record(messages=messages, events=log_events)
        await store.record_hits(hits)
        before, written = written, written + len(log_events) + len(hits)
        if before // PROGRESS_EVERY != written // PROGRESS_EVERY or written == events:
            print(
                f"  recorded {written:>9,} events  {time.perf_counter() - started:6.1f}s",
                flush=True,
            )
    return time.perf_counter() - started, expected


def _expected(planned: Plan) -> Counter[str]:
    """The totals for all mail that the plan makes, counted in Python."""
    counts: Counter[str] = Counter()
    firsts: set[tuple[int, str]] = set()
    names = {SEND: "sent", DELIVERY: "delivered"}
    for _, kind, index, *details in planned.items:
        if kind == BOUNCE:
            counts[f"bounced:{details[0]}"] += 1
            continue
        if kind in names:
            counts[names[kind]] += 1
            continue
        what = "opens" if kind == OPEN else "clicks"
        machine = "machine" if kind == OPEN else "bot"
        klass = machine if details[0] else "human"
        counts[f"{what}:{klass}"] += 1
        if kind == OPEN and not details[0] and details[2] is not None:
            counts["opens:proxied"] += 1
        for unique in (f"unique_{what}", f"unique_{what}:{klass}"):
            if (index, unique) not in firsts:
                firsts.add((index, unique))
                counts[unique] += 1
    return counts


async def catch_up(store: Store) -> tuple[int, float]:
    """Roll up every event not counted yet; how many, and the seconds it took."""
    started = time.perf_counter()
    counted = 0
    while added := await store.rollup():
        counted += added
        if counted % PROGRESS_EVERY < added:
            print(
                f"  rolled up {counted:>9,} events  {time.perf_counter() - started:6.1f}s",
                flush=True,
            )
    return counted, time.perf_counter() - started


async def timed(run: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Milliseconds of each of `repeat` runs (no warm-up: the first counts too)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    return times


@asynccontextmanager
async def api_server(store: Store) -> AsyncIterator[str]:
    """The tracker's statistics API on a loopback port, reading `store`; yields its URL."""
    app = web.Application()
    add_api(app, access=Access(TOKEN), stats=store)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/api/v1/stats"
    finally:
        await runner.cleanup()


NaiveTotals = Callable[[str | None, str | None], Awaitable[dict[str, int]]]
"""The naive totals for a configuration set and a tag (None: any)."""


@asynccontextmanager
async def naive_totals(url: str) -> AsyncIterator[NaiveTotals]:
    """Counts the naive totals of the store at `url`, on one connection of its own."""

    def totals(row: Iterable[Any] | None) -> dict[str, int]:
        assert row is not None
        return dict(zip(NAIVE_METRICS, (int(str(value)) for value in row), strict=True))

    if is_postgresql(url):
        connection = await asyncpg.connect(url)
        try:

            async def on_postgresql(config_set: str | None, tag: str | None) -> dict[str, int]:
                return totals(await connection.fetchrow(NAIVE_SQL_POSTGRESQL, config_set, tag))

            yield on_postgresql
        finally:
            await connection.close()
        return
    path = store_config(url).sqlite_path
    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as sqlite:

        async def on_sqlite(config_set: str | None, tag: str | None) -> dict[str, int]:
            async with sqlite.execute(NAIVE_SQL, {"config_set": config_set, "tag": tag}) as cursor:
                return totals(await cursor.fetchone())

        yield on_sqlite


def rolled_up(totals: dict[str, int]) -> dict[str, int]:
    """The roll-up's counters for the metrics the naive query counts."""
    found = {name: totals.get(name, 0) for name in NAIVE_METRICS}
    found["bounced"] = sum(v for k, v in totals.items() if k.startswith("bounced:"))
    return found


def compare(label: str, counted: dict[str, dict[str, int]]) -> list[str]:
    """What the two ways of counting in `counted` disagree on."""
    (first, a), (second, b) = counted.items()
    return [
        f"{label}: {name}: {first} {a[name]:,}, {second} {b[name]:,} ({b[name] - a[name]:+,})"
        for name in NAIVE_METRICS
        if a[name] != b[name]
    ]


@dataclass(kw_only=True, slots=True)
class Results:
    events: int = 0
    copies: int = 0
    counters: int = 0
    firsts: int = 0
    recorded: float = 0.0
    rolled_up: int = 0
    rollup_seconds: float = 0.0
    queries: list[tuple[str, list[float], list[float]]] = field(default_factory=list)
    """Label, milliseconds through the store, through the API."""
    naive: list[tuple[str, list[float]]] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    """The roll-up's totals of the queries without groups."""
    problems: list[str] = field(default_factory=list)
    size: str = ""
    """What the store takes on disk."""


def describe(url: str) -> str:
    """Where the store is, for people."""
    return describe_postgresql(url) if is_postgresql(url) else str(store_config(url).sqlite_path)


def statistics_url(url: str) -> str:
    """Where the store at `url` keeps its counters (a SQLite store: its outbox file)."""
    if is_postgresql(url):
        return url
    return sqlite_url(outbox_path(store_config(url).sqlite_path or Path()))


async def disk_size(url: str) -> str:
    if is_postgresql(url):
        size = await count(url, "SELECT pg_database_size(current_database())")
        return f"database {size / 1e6:,.0f} MB"
    path = store_config(url).sqlite_path or Path()
    return f"log {path.stat().st_size / 1e6:.0f} MB, outbox {outbox_path(path).stat().st_size / 1e6:.0f} MB"


async def time_queries(store: Store, repeat: int, results: Results) -> None:
    """Each query through the store and through the API."""
    async with (
        api_server(store) as url,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
    ):
        for label, params in QUERIES:
            query = parse_query(params, now=time.time())

            async def through_store(query: StatsQuery = query) -> dict[str, Any]:
                return report(query, await store.stats(query), now=time.time())

            async def through_http(params: dict[str, str] = params) -> dict[str, Any]:
                async with session.get(url, params=params) as response:
                    response.raise_for_status()
                    data: dict[str, Any] = await response.json()
                    return data

            direct = await timed(through_store, repeat)
            http = await timed(through_http, repeat)
            results.queries.append((label, direct, http))
            if (await through_http())["totals"] != (await through_store())["totals"]:
                results.problems.append(f"{label}: the API's totals differ from the store's")
            if not params.get("by"):
                results.totals[label] = (await store.stats(query)).totals


async def baseline(url: str, runs: int, results: Results, planned: Counter[str] | None) -> None:
    """The naive totals: timed for all mail and one set, and checked against the
    roll-up's (and the plan's) for those and one tag."""
    async with naive_totals(url) as naive_totals_of:
        for label, params in QUERIES[:3]:
            scope = (params.get("config_set"), params.get("tag"))
            naive = await naive_totals_of(*scope)
            rollup = rolled_up(results.totals[label])
            results.problems += compare(label, {"naive": naive, "roll-up": rollup})
            if scope == (None, None) and planned is not None:
                planned_totals = rolled_up(planned)
                results.problems += compare(label, {"planned": planned_totals, "naive": naive})
            if scope[1] is not None:
                continue  # checked only: the naive baseline is timed for all mail and a set

            async def count_naive(scope: tuple[str | None, str | None] = scope) -> object:
                return await naive_totals_of(*scope)

            results.naive.append((label, await timed(count_naive, runs)))


async def measure(args: argparse.Namespace, url: str) -> Results:
    results = Results()
    store = await open_url(url)
    try:
        results.events = await count(url, "SELECT coalesce(max(seq), 0) FROM events")
        planned: Counter[str] | None = None
        if results.events:
            print(f"using the {results.events:,} events already in {describe(url)}")
        else:
            results.recorded, planned = await fill(store, args.events, time.time())
            results.events = args.events
        print("rolling up ...", flush=True)
        results.rolled_up, results.rollup_seconds = await catch_up(store)
        print("querying ...", flush=True)
        await time_queries(store, args.repeat, results)
    finally:
        await store.close()
    print("counting the naive way ...", flush=True)
    await baseline(url, args.baseline_runs or max(3, args.repeat // 4), results, planned)
    results.copies = await count(url, "SELECT count(*) FROM messages")
    results.counters = await count(statistics_url(url), "SELECT count(*) FROM stats")
    results.firsts = await count(statistics_url(url), "SELECT count(*) FROM stats_firsts")
    results.size = await disk_size(url)
    return results


def _ms(times: list[float]) -> str:
    return f"{statistics.median(times):9.2f} {max(times):9.2f}"


def show(results: Results, url: str, repeat: int, target_ms: float) -> int:
    """Print the results; 1 if the target is missed or the counts disagree (the
    target's verdict is then INVALID: the store did not count what was recorded)."""
    print(
        f"\n{results.events:,} events of {results.copies:,} copies over {DAYS} days "
        f"in {describe(url)}; {results.size} "
        f"({results.counters:,} counters, {results.firsts:,} firsts)"
    )
    if results.recorded:
        print(
            f"recorded through the store in {results.recorded:.1f}s "
            f"({results.events / results.recorded:,.0f} events/s)"
        )
    if results.rollup_seconds:
        print(
            f"roll-up: {results.rolled_up:,} events in {results.rollup_seconds:.1f}s "
            f"({results.rolled_up / results.rollup_seconds:,.0f} events/s)"
        )
    print(f"\n{repeat} runs each, ms{'':24} store median     max   API median     max")
    for label, direct, http in results.queries:
        print(f"{label:36} {_ms(direct)}   {_ms(http)}")
    runs = len(results.naive[0][1]) if results.naive else 0
    print(f"\nbaseline: the same totals by one SQL query over the log ({runs} runs each), ms")
    print(f"{'':36} {'median':>9} {'max':>9} {'roll-up':>9} {'ratio':>9}")
    for label, times in results.naive:
        direct = next(d for name, d, _ in results.queries if name == label)
        naive_median, rollup_median = statistics.median(times), statistics.median(direct)
        print(
            f"{label:36} {naive_median:9.1f} {max(times):9.1f} {rollup_median:9.2f} "
            f"{naive_median / rollup_median:8.0f}x"
        )
    label, _, worst = max(results.queries, key=lambda result: max(result[2]))
    verdict = "PASS" if max(worst) < target_ms else "FAIL"
    if results.problems:
        verdict = "INVALID"
    print(
        f"\ntarget: every query through the API under {target_ms:.0f} ms with "
        f"{results.events:,} events: {verdict} (slowest: {label}, max {max(worst):.1f} ms)"
    )
    if results.problems:
        print("the counts disagree:", *results.problems, sep="\n  ")
    else:
        print("the naive totals equal the roll-up's (all mail, one set, one tag)")
    return 0 if verdict == "PASS" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="runs of each query")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", type=Path, help="keep a SQLite store here (and reuse it)")
    where.add_argument(
        "--store-url", help="keep the store at this URL, e.g. postgresql://127.0.0.1:5432/DB"
    )
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    parser.add_argument(
        "--baseline-runs",
        type=int,
        help="runs of each naive count (default: repeat / 4, 3 at least)",
    )
    args = parser.parse_args()
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    if args.store_url is not None or args.store is not None:
        url = args.store_url or sqlite_url(args.store.resolve())
        sys.exit(show(asyncio.run(measure(args, url)), url, args.repeat, args.target_ms))
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        url = sqlite_url(Path(tmp) / "pixelpost.db")
        code = show(asyncio.run(measure(args, url)), url, args.repeat, args.target_ms)
    sys.exit(code)


if __name__ == "__main__":
    main()
