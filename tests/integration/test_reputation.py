"""Reputation through the real aiohttp app and the real SQLite store: events recorded,
counted, and read back as bounce and complaint rates by `GET /api/v1/reputation` and
by `pixelpost reputation`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pixelpost.app.cli import main
from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event, bounce_event, delivery_event, dumps, send_event
from pixelpost.core.ids import new_event_id
from pixelpost.core.mail import timestamp
from pixelpost.store import MessageRecord, SQLiteStore
from tests.conftest import AppServer
from tracker.api import add_api
from tracker.auth import Access

TOKEN = "reputation-test-token-93ab1c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _message(message_id: str, config_set: str | None, at: datetime) -> MessageRecord:
    mail = {"messageId": message_id, "tags": {}}
    return MessageRecord(id=message_id, config_set=config_set, created_at=at, mail=dumps(mail))


def _delivered(message_id: str, at: datetime) -> Event:
    return delivery_event(
        message_id,
        recipients=[f"{message_id}@example.org"],
        smtp_response="250 2.0.0 OK",
        processing_ms=80,
        reporting_mta="relay.test",
        now=at,
    )


def _bounced(message_id: str, bounce_type: str, at: datetime) -> Event:
    return bounce_event(
        message_id,
        bounce_type=bounce_type,
        bounce_subtype="General",
        recipients=[(f"{message_id}@example.org", "5.1.1", "smtp; 550 5.1.1 no such user")],
        reporting_mta="relay.test",
        now=at,
    )


def _complained(message_id: str, at: datetime) -> Event:
    detail = {
        "complainedRecipients": [{"emailAddress": f"{message_id}@example.org"}],
        "timestamp": timestamp(at),
        "feedbackId": new_event_id(),
        "complaintFeedbackType": "abuse",
    }
    return Event(
        id=new_event_id(),
        type=EventType.COMPLAINT,
        message_id=message_id,
        created_at=at,
        detail=dumps(detail),
    )


async def seed(store: SQLiteStore) -> None:
    """Over the last seven days:

    marketing  40 sent: 35 delivered, 2 Permanent and 3 Transient bounces, 1 complaint
               (and, 20 days ago, 1 sent that bounced for good)
    receipts   1000 sent and delivered, 1 complaint
    no set     1 sent, bounced for good
    """
    now = datetime.now(UTC)
    recent, old = now - timedelta(days=2), now - timedelta(days=20)
    messages: list[MessageRecord] = []
    events: list[Event] = []

    def sent(message_id: str, config_set: str | None, at: datetime) -> str:
        messages.append(_message(message_id, config_set, at))
        events.append(send_event(message_id, now=at))
        return message_id

    marketing = [sent(f"mk{n}", "marketing", recent) for n in range(40)]
    events += [_delivered(m, recent) for m in marketing[:35]]
    events += [_bounced(m, "Permanent", recent) for m in marketing[35:37]]
    events += [_bounced(m, "Transient", recent) for m in marketing[37:]]
    events.append(_complained(marketing[0], now - timedelta(hours=5)))
    events.append(_bounced(sent("mk-old", "marketing", old), "Permanent", old))

    receipts = [sent(f"rc{n}", "receipts", recent) for n in range(1000)]
    events += [_delivered(m, recent) for m in receipts]
    events.append(_complained(receipts[0], recent))

    events.append(_bounced(sent("loose", None, recent), "Permanent", recent))
    await store.record(messages=messages, events=events)


@pytest.fixture
async def base(store: SQLiteStore, serve_app: AppServer) -> str:
    app = web.Application()
    add_api(app, access=Access(TOKEN), stats=store)
    await seed(store)
    while await store.rollup():
        pass
    return await serve_app(app)


async def reputation(
    http: aiohttp.ClientSession, base: str, query: str = "", *, status: int = 200
) -> dict[str, Any]:
    async with http.get(f"{base}/api/v1/reputation?{query}", headers=BEARER) as response:
        assert response.status == status, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        data: dict[str, Any] = await response.json()
        return data


def by_set(data: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {entry["config_set"]: entry for entry in data["config_sets"]}


async def test_the_rates_per_configuration_set_over_the_last_seven_days(
    base: str, http: aiohttp.ClientSession
) -> None:
    data = await reputation(http, base)
    assert data["window"] == "7d"
    assert data["config_set"] is None
    assert data["thresholds"] == {
        "bounce": {"warning": 0.05, "at_risk": 0.1},
        "complaint": {"warning": 0.001, "at_risk": 0.005},
    }
    sets = by_set(data)
    assert list(sets) == [None, "marketing", "receipts"]
    # 2 Permanent bounces of 40 sent: 5 %, the warning exactly. The 3 Transient ones do
    # not count (with them it would be 12.5 %, at risk); nor does the bounce 20 days ago.
    assert sets["marketing"]["bounce"] == {
        "sent": 40,
        "permanent": 2,
        "rate": 0.05,
        "status": "warning",
    }
    assert sets["marketing"]["complaint"] == {
        "delivered": 35,
        "complained": 1,
        "rate": round(1 / 35, 6),
        "status": "at_risk",
    }
    # 1 complaint of 1000 delivered: 0.1 %, the warning exactly.
    assert sets["receipts"]["complaint"] == {
        "delivered": 1000,
        "complained": 1,
        "rate": 0.001,
        "status": "warning",
    }
    assert sets["receipts"]["bounce"]["status"] == "healthy"
    assert sets["receipts"]["bounce"]["rate"] == 0.0
    assert sets[None]["bounce"] == {"sent": 1, "permanent": 1, "rate": 1.0, "status": "at_risk"}
    assert sets[None]["complaint"] == {
        "delivered": 0,
        "complained": 0,
        "rate": None,
        "status": "healthy",
    }
    assert data["total"]["bounce"] == {
        "sent": 1041,
        "permanent": 3,
        "rate": round(3 / 1041, 6),
        "status": "healthy",
    }
    assert data["total"]["complaint"]["complained"] == 2
    assert data["total"]["complaint"]["status"] == "warning"  # 2 of 1035: 0.19 %


async def test_a_longer_window_takes_in_older_mail_and_one_set_can_be_asked_for(
    base: str, http: aiohttp.ClientSession
) -> None:
    data = await reputation(http, base, "config_set=marketing&window=30d")
    assert (data["window"], data["config_set"]) == ("30d", "marketing")
    [marketing] = data["config_sets"]
    assert marketing["config_set"] == "marketing"
    assert marketing["bounce"] == {
        "sent": 41,
        "permanent": 3,
        "rate": round(3 / 41, 6),
        "status": "warning",
    }
    assert data["total"] == {key: marketing[key] for key in ("bounce", "complaint")}

    # A day's window holds only the complaint of five hours ago.
    day = by_set(await reputation(http, base, "window=24h"))
    assert day["marketing"]["bounce"]["sent"] == 0
    assert day["marketing"]["complaint"] == {
        "delivered": 0,
        "complained": 1,
        "rate": None,
        "status": "healthy",
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("window=week", "window: 'week' is not a duration"),
        ("window=91d", "window: '91d' is not from 1h to 90d"),
        ("window=30m", "window: '30m' is not from 1h to 90d"),
        ("config_set=no%20such", "config_set: 'no such' is not a configuration set name"),
        ("since=7d", "since: unknown parameter"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(
    base: str, http: aiohttp.ClientSession, query: str, message: str
) -> None:
    data = await reputation(http, base, query, status=400)
    assert data["error"].startswith(message)


async def test_the_reputation_api_wants_the_token(base: str, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        async with http.get(f"{base}/api/v1/reputation", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="pixelpost"')
            assert "error" in await response.json()


def test_the_reputation_command_prints_the_table_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def record() -> None:
        store = await SQLiteStore.open(tmp_path / "s.db")
        try:
            await seed(store)  # not rolled up: the command counts it first
        finally:
            await store.close()

    asyncio.run(record())
    config = tmp_path / "pixelpost.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n')

    assert main(["reputation", "-c", str(config), "--json", "--config-set", "receipts"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window"] == "7d"
    assert [entry["config_set"] for entry in data["config_sets"]] == ["receipts"]
    assert data["config_sets"][0]["complaint"]["status"] == "warning"

    assert main(["reputation", "-c", str(config), "--window", "30d"]) == 0
    header, _, *rows, footer = capsys.readouterr().out.splitlines()
    assert header.startswith("reputation of all mail over the last 30d (rolling), from ")
    assert [row.split() for row in rows] == [
        ["(no", "set)", "1", "1", "100.00%", "at", "risk", "0", "0", "-", "healthy"],
        ["marketing", "41", "3", "7.32%", "warning", "35", "1", "2.86%", "at", "risk"],
        ["receipts", "1000", "0", "0.00%", "healthy", "1000", "1", "0.10%", "warning"],
        ["total", "1042", "4", "0.38%", "healthy", "1035", "2", "0.19%", "warning"],
    ]
    assert footer.startswith("thresholds: bounce rate (hard bounces / sent) warning at 5%,")

    assert main(["reputation", "-c", str(config), "--window", "100d"]) == 1
    assert capsys.readouterr().err == "pixelpost: --window: '100d' is not from 1h to 90d\n"
    assert main(["reputation", "-c", str(config), "--config-set", "a/b"]) == 1
    assert capsys.readouterr().err.startswith("pixelpost: --config-set: 'a/b' is not")


async def test_a_store_that_cannot_be_read_is_a_503(
    tmp_path: Path, serve_app: AppServer, http: aiohttp.ClientSession
) -> None:
    store = await SQLiteStore.open(tmp_path / "closed.db")
    app = web.Application()
    add_api(app, access=Access(TOKEN), stats=store)
    base = await serve_app(app)
    await store.close()
    for path in ("/api/v1/reputation", "/api/v1/stats"):
        async with http.get(f"{base}{path}", headers=BEARER) as response:
            assert response.status == 503, path
            assert (await response.json())["error"].startswith("the statistics cannot be read")


async def test_copies_not_sent_to_suppressed_recipients_do_not_count_as_hard_bounces(
    store: SQLiteStore, serve_app: AppServer, http: aiohttp.ClientSession
) -> None:
    """SES leaves bounces for its suppression list out of the bounce rate: no mailbox
    provider saw those copies. The funnel counts them apart as `suppressed`."""
    app = web.Application()
    add_api(app, access=Access(TOKEN), stats=store)
    now = datetime.now(UTC) - timedelta(hours=1)
    messages = [_message(f"s{n}", "news", now) for n in range(10)]
    events = [send_event(m.id, now=now) for m in messages]
    events += [_delivered(m.id, now) for m in messages[:8]]
    events.append(_bounced("s8", "Permanent", now))
    events.append(
        bounce_event(
            "s9",
            bounce_type="Permanent",
            bounce_subtype="OnAccountSuppressionList",
            recipients=[("s9@example.org", "5.7.1", "on the suppression list")],
            reporting_mta="relay.test",
            now=now,
        )
    )
    await store.record(messages=messages, events=events)
    while await store.rollup():
        pass
    base = await serve_app(app)

    found = await reputation(http, base, "config_set=news")
    [news] = found["config_sets"]
    assert news["bounce"]["permanent"] == 1
    assert news["bounce"]["rate"] == 0.1
    async with http.get(f"{base}/api/v1/stats?config_set=news", headers=BEARER) as response:
        totals = (await response.json())["totals"]
    assert totals["suppressed"] == 1
    assert totals["bounced"]["Permanent"] == 2
