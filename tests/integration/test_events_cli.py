"""`pixelpost events dead-letters` and `pixelpost events replay` on a real store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelpost.app.cli import main
from pixelpost.core.event_types import EventType
from pixelpost.core.events import send_event
from pixelpost.store import MessageRecord, Route, SQLiteStore

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[config_sets.marketing]
destinations = ["app", "archive"]
[destinations.app]
type = "webhook"
url = "http://127.0.0.1:9/events"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[destinations.archive]
type = "file"
path = "{tmp_path / "events.jsonl"}"
"""
    )
    return path


async def make_dead_letters(tmp_path: Path) -> list[str]:
    store = await SQLiteStore.open(tmp_path / "pixelpost.db")
    events = [send_event("m1", now=NOW), send_event("m1", now=NOW)]
    await store.record(
        messages=[MessageRecord(id="m1", config_set="marketing", created_at=NOW, mail="{}")],
        events=events,
    )
    await store.route(
        [
            Route(config_set="marketing", event_type=EventType.SEND, destination=d)
            for d in ("app", "archive")
        ]
    )
    for claimed in await store.claim("app", limit=10, lease=60):
        await store.dead("app", claimed.seq, attempts=8, error="HTTP 500: boom")
    await store.disable("archive", "disabled: the endpoint answered HTTP 410 Gone")
    await store.close()
    return [e.id for e in events]


def test_dead_letters_are_listed_and_replayed(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = asyncio.run(make_dead_letters(tmp_path))

    assert main(["events", "dead-letters", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "destination archive is disabled: disabled: the endpoint answered HTTP 410 Gone" in out
    assert all(event_id in out for event_id in ids)
    assert "HTTP 500: boom" in out
    assert out.rstrip().endswith("4 dead letters; `pixelpost events replay` queues them again")

    assert (
        main(["events", "dead-letters", "-c", str(config_file), "--destination", "app", "--json"])
        == 0
    )
    listed = json.loads(capsys.readouterr().out)
    assert [(d["eventId"], d["attempts"], d["eventType"]) for d in listed] == [
        (ids[0], 8, EventType.SEND.value),
        (ids[1], 8, EventType.SEND.value),
    ]

    assert main(["events", "replay", "-c", str(config_file), "--destination", "archive"]) == 0
    out = capsys.readouterr().out
    assert "destination archive enabled again" in out
    assert "queued 2 dead letters for archive again" in out
    assert main(["events", "replay", "-c", str(config_file)]) == 0
    assert "queued 2 dead letters again" in capsys.readouterr().out
    assert main(["events", "dead-letters", "-c", str(config_file)]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"


def test_an_unknown_destination_is_named(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", "replay", "-c", str(config_file), "--destination", "nope"]) == 1
    assert "--destination 'nope' is not a destination (configured: app, archive)" in (
        capsys.readouterr().err
    )
