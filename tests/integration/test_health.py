"""Readiness over real HTTP: /readyz on the tracker and on the relay's own listener,
each check failing for real (a locked or removed store, a webhook that never answers,
a spool that cannot be written), and the process metrics beside the relay's queue."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.destinations import make_senders
from pipeline.dispatch import Dispatcher
from pixelpost.app.runtime import spool_counts, start_relay_http
from pixelpost.config import Config, parse_config_text
from pixelpost.core.event_types import EventType
from pixelpost.core.events import send_event
from pixelpost.health import probes_for
from pixelpost.store import DestinationCounts, MessageRecord, Route, SQLiteStore
from tests.conftest import AppServer, RelayStarter, codec_for, config_text, until
from tests.integration.test_relay_passthrough import MESSAGE, send
from tests.net import free_port
from tracker.app import create_app
from tracker.auth import Access
from tracker.metrics import Metrics
from tracker.views import Views

TrackerStarter = Callable[..., Awaitable[str]]
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WITHIN = 10.0
"""Seconds a test waits for a condition before failing."""


def health_config(
    tmp_path: Path,
    *,
    upstream_url: str = "maildir:./outbox",
    relay: str = "",
    tracker: str = "",
    webhook: str | None = None,
) -> Config:
    """The tests' configuration (`config_text`), with lines added to `[tracker]`, and
    with `webhook`, a destination "hook" that the default set's events go to."""
    text = config_text(upstream_url, tmp_path, relay=relay).replace(
        'public_url = "https://t.example"\n', f'public_url = "https://t.example"\n{tracker}\n'
    )
    if webhook is not None:
        text = text.replace(
            '[config_sets.default]\ndestinations = ["archive"]',
            '[config_sets.default]\ndestinations = ["hook"]',
        )
        text += (
            f'[destinations.hook]\ntype = "webhook"\nurl = "{webhook}"\n'
            f'secret = "{WEBHOOK_SECRET}"\n'
        )
    return parse_config_text(text, environ={})


@pytest.fixture
def start_tracker(serve_app: AppServer) -> TrackerStarter:
    """Serves the tracker's application as the runtime assembles it, with the checks
    of a process that runs the tracker (and the relay too, with `relay`)."""

    async def start(config: Config, store: SQLiteStore, *, relay: bool = False) -> str:
        metrics = Metrics()
        views = Views(
            codec=codec_for(config),
            recorder=store,
            trusted_proxies=(),
            anonymize_ip=False,
            metrics=metrics,
        )
        app = create_app(
            views=views,
            metrics=metrics,
            access=Access(None),
            stats=store,
            suppression=store,
            probes=probes_for(config, store, relay=relay, tracker=True),
        )
        return await serve_app(app)

    return start


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/readyz") as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()


async def record_send(store: SQLiteStore, *, at: datetime, config_set: str = "default") -> None:
    """A copy of a message and its Send event, recorded as of `at`."""
    mail = json.dumps({"messageId": "m1", "tags": {"ses:configuration-set": [config_set]}})
    await store.record(
        messages=[MessageRecord(id="m1", config_set=config_set, created_at=at, mail=mail)],
        events=[send_event("m1", now=at)],
    )


async def test_readyz_lists_every_check_and_healthz_stays_liveness(
    tmp_path: Path, store: SQLiteStore, start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    config = health_config(tmp_path)
    base = await start_tracker(config, store)

    status, body = await readyz(http, base)
    assert status == 200
    assert body["status"] == "ready"
    assert body["failed"] == []
    assert body["checks"] == {
        "store": {"status": "ok", "detail": "takes writes"},
        "outbox": {"status": "ok", "detail": "nothing waits"},
        # A tracker on its own checks the relay's spool only where there is one.
        "spool": {
            "status": "skipped",
            "detail": f"no spool at {tmp_path / 'spool'} on this machine (relay.outbound.spool)",
        },
    }
    (tmp_path / "spool" / "tmp").mkdir(parents=True)
    status, body = await readyz(http, base)
    assert (status, body["checks"]["spool"]["status"]) == (200, "ok")
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []  # the probe's file is gone

    async with http.get(f"{base}/healthz") as response:
        assert response.status == 200
        assert set(await response.json()) == {"status", "version"}


async def test_the_tracker_metrics_show_the_process(
    tmp_path: Path, store: SQLiteStore, start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    base = await start_tracker(health_config(tmp_path), store)

    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert f"\n{name}" in text, name
    assert "\npixelpost_opens_total 0.0" in text


@pytest.mark.parametrize(
    "trouble", ["locked by another process", "its folder removed", "its file removed"]
)
async def test_a_store_that_cannot_be_written_makes_readyz_503_within_a_second(
    tmp_path: Path, start_tracker: TrackerStarter, http: aiohttp.ClientSession, trouble: str
) -> None:
    folder = tmp_path / "data"
    store = await SQLiteStore.open(folder / "pixelpost.db")
    other = sqlite3.connect(folder / "pixelpost.db", isolation_level=None)
    try:
        base = await start_tracker(health_config(tmp_path), store)
        assert (await readyz(http, base))[0] == 200
        if trouble == "locked by another process":
            other.execute("BEGIN EXCLUSIVE")
        elif trouble == "its folder removed":
            shutil.rmtree(folder)
        else:
            (folder / "pixelpost.db").unlink()

        started = time.monotonic()
        status, body = await readyz(http, base)
        took = time.monotonic() - started

        assert status == 503
        assert (body["status"], body["failed"]) == ("not ready", ["store"])
        assert body["checks"]["store"]["status"] == "failed"
        expected = "locked" if trouble == "locked by another process" else "unable to open"
        assert expected in body["checks"]["store"]["detail"]
        assert body["checks"]["outbox"]["status"] == "ok"  # its reads still work
        assert took < 3  # bounded (1 s, with room for a loaded machine), not the 10 s busy wait
        if trouble == "locked by another process":
            other.execute("ROLLBACK")
            assert (await readyz(http, base))[0] == 200
    finally:
        other.close()
        await store.close()


async def test_an_event_a_webhook_never_takes_makes_readyz_503_until_it_is_a_dead_letter(
    tmp_path: Path, store: SQLiteStore, start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    config = health_config(tmp_path, tracker='ready_max_outbox_lag = "1s"', webhook=refused)
    base = await start_tracker(config, store)
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(
            config=config,
            store=store,
            senders=make_senders(config, session=session, store=store),
        )
        dispatcher.start()
        try:
            await record_send(store, at=datetime.now(UTC))
            dispatcher.wake()

            async def tried() -> int:
                return (await store.counts()).get("hook", DestinationCounts()).failed

            await until(tried, "the webhook tried", within=WITHIN)
            assert (await store.outbox_depth()) == {"hook": 1}  # pending, to be retried

            async def lagging() -> tuple[int, dict[str, Any]] | None:
                answer = await readyz(http, base)
                if answer[0] == 200:
                    assert answer[1]["checks"]["outbox"]["status"] == "ok"
                    return None
                return answer

            status, body = await until(lagging, "readyz saying the outbox lags", within=WITHIN)
            assert (status, body["failed"]) == (503, ["outbox"])
            assert body["checks"]["outbox"]["detail"].endswith(
                "to be delivered, longer than tracker.ready_max_outbox_lag (1s)"
            )
            await store.disable("hook", "gone for good")  # its deliveries: dead letters
            status, body = await readyz(http, base)
            assert (status, body["checks"]["outbox"]["detail"]) == (200, "nothing waits")
        finally:
            await dispatcher.stop(grace=0)


async def test_the_outbox_waits_for_events_not_routed_and_pending_but_not_dead_letters(
    store: SQLiteStore,
) -> None:
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert await store.outbox_oldest(["hook"]) is None
    await record_send(store, at=at)
    await record_send(store, at=at + timedelta(seconds=30))  # the same copy, once more

    assert await store.outbox_oldest(["hook"]) == at.timestamp()  # not routed yet
    routes = [Route(config_set="default", event_type=EventType.SEND, destination="hook")]
    assert await store.route(routes) == 2
    assert await store.outbox_oldest(["hook"]) == at.timestamp()  # pending
    # Nothing delivers to a destination no longer configured: it is no one's lag.
    assert await store.outbox_oldest(["archive"]) is None
    [first, _] = await store.claim("hook", limit=10, lease=60)
    await store.dead("hook", first.seq, attempts=7, error="gave up")
    assert await store.outbox_oldest(["hook"]) == at.timestamp() + 30
    await store.delivered("hook", [first.seq + 1])
    assert await store.outbox_oldest(["hook"]) is None


async def test_a_spool_that_cannot_be_written_makes_readyz_503(
    tmp_path: Path, store: SQLiteStore, start_tracker: TrackerStarter, http: aiohttp.ClientSession
) -> None:
    config = health_config(tmp_path)
    base = await start_tracker(config, store, relay=True)
    status, body = await readyz(http, base)
    # The relay runs here: a spool that is not there yet is a failure, not a skip.
    assert (status, body["failed"]) == (503, ["spool"])
    (tmp_path / "spool" / "tmp").mkdir(parents=True)
    assert (await readyz(http, base))[0] == 200

    # chmod stops no one running as root: a file where the folder was stops everyone.
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("not a folder")
    status, body = await readyz(http, base)

    assert (status, body["failed"]) == (503, ["spool"])
    assert body["checks"]["spool"] == {
        "status": "failed",
        "detail": f"{tmp_path / 'spool'} is not writable: Not a directory",
    }


async def test_a_relay_alone_serves_metrics_health_and_readiness_on_its_own_listener(
    tmp_path: Path, store: SQLiteStore, start_relay: RelayStarter, http: aiohttp.ClientSession
) -> None:
    # An upstream that refuses connections: the message stays in the spool, deferred.
    config = health_config(
        tmp_path,
        upstream_url=f"smtp://127.0.0.1:{free_port()}",
        relay='http_listen = "127.0.0.1:0"',
    )
    relay = await start_relay(config)
    assert "queued as" in await send(relay.address.port, MESSAGE)
    await until(lambda: spool_counts(config.relay.spool) == (1, 1), "the message deferred")
    async with contextlib.AsyncExitStack() as stack:
        server = await start_relay_http(
            config, stack, probes_for(config, store, relay=True, tracker=False)
        )
        base = f"http://{server.address}"

        async def counted() -> str | None:
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            return text if "pixelpost_queue_messages" in text else None

        # The spool is counted on a thread, as soon as the listener starts.
        text = await until(counted, "the queue counted", within=WITHIN)
        assert '\npixelpost_queue_messages{state="deferred"} 1.0' in text
        assert '\npixelpost_queue_messages{state="waiting"} 0.0' in text
        assert "\nprocess_resident_memory_bytes " in text
        assert "\nprocess_open_fds " in text
        assert "pixelpost_opens" not in text  # the tracker's, not counted here
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        status, body = await readyz(http, base)
        assert status == 200
        assert {name: check["status"] for name, check in body["checks"].items()} == {
            "store": "ok",
            "outbox": "skipped",
            "spool": "ok",
        }
    with pytest.raises(aiohttp.ClientConnectionError):
        await readyz(http, base)  # stopped with the stack
