"""The suppression list's API over real HTTP, in the whole tracker application with the
real SQLite store: the token, each route's answers and errors, addresses without regard
to case, pages, and what the command line then sees."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pixelpost.app.cli import main
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.core.tokens import TokenCodec
from pixelpost.store import SQLiteStore
from tests.conftest import AppServer
from tracker.app import create_app
from tracker.auth import COOKIE, Access
from tracker.metrics import Metrics
from tracker.suppression import BODY_LIMIT, PAGE_MAX
from tracker.views import Views

TOKEN = "suppression-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
TrackerStarter = Callable[..., Awaitable[str]]


@pytest.fixture
def access() -> Access:
    return Access(TOKEN)


@pytest.fixture
def start_tracker(store: SQLiteStore, serve_app: AppServer, access: Access) -> TrackerStarter:
    """Starts the whole tracker application, with `access` (or, for another `token`, an
    Access of its own: None turns the API off)."""

    async def start(*, token: str | None = TOKEN) -> str:
        metrics = Metrics()
        views = Views(
            codec=TokenCodec([os.urandom(32)]),
            recorder=store,
            trusted_proxies=(),
            anonymize_ip=False,
            metrics=metrics,
        )
        app = create_app(
            views=views,
            metrics=metrics,
            access=access if token == TOKEN else Access(token),
            stats=store,
            suppression=store,
        )
        return await serve_app(app)

    return start


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """(status, JSON body or None) of one request, with the token unless `headers`."""
    async with http.request(
        method, url, headers=AUTH if headers is None else headers, **kwargs
    ) as response:
        text = await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, json.loads(text) if text else None


async def test_an_address_goes_on_is_read_and_comes_off_in_any_case(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    url = f"{base}/api/v1/suppression"
    before = datetime.now(UTC)

    status, body = await call(http, "PUT", f"{url}/Jane.Doe@Example.COM")  # no body: MANUAL
    assert status == 200
    assert body["emailAddress"] == "jane.doe@example.com"
    assert (body["reason"], body["messageId"]) == ("MANUAL", None)
    added = datetime.fromisoformat(body["lastUpdateTime"])
    assert before.replace(microsecond=0) <= added <= datetime.now(UTC)
    assert body["lastUpdateTime"].endswith("Z")
    # It is the list the relay looks recipients up in.
    assert await store.suppressed(["jane.doe@example.com"]) == {"jane.doe@example.com"}

    assert await call(http, "GET", f"{url}/JANE.DOE@example.com") == (200, body)
    status, again = await call(
        http, "PUT", f"{url}/jane.doe@example.com", json={"reason": "bounce"}
    )
    assert (status, again["emailAddress"], again["reason"]) == (
        200,
        "jane.doe@example.com",
        "BOUNCE",
    )
    entry = await store.suppression("jane.doe@example.com")
    assert entry is not None
    assert entry.reason is Reason.BOUNCE

    # Percent-encoded, as a client should send an address with / or + in it.
    status, odd = await call(http, "PUT", f"{url}/a%2Fb%2Bc@example.org", data=b"")
    assert (status, odd["emailAddress"]) == (200, "a/b+c@example.org")

    async with http.delete(f"{url}/Jane.Doe@EXAMPLE.com", headers=AUTH) as response:
        assert response.status == 204
        assert await response.read() == b""
    status, body = await call(http, "DELETE", f"{url}/jane.doe@example.com")
    assert (status, body) == (
        404,
        {"error": "jane.doe@example.com is not on the suppression list"},
    )
    status, body = await call(http, "GET", f"{url}/jane.doe@example.com")
    assert (status, body) == (
        404,
        {"error": "jane.doe@example.com is not on the suppression list"},
    )
    assert await store.suppressed(["jane.doe@example.com"]) == frozenset()


async def test_an_entry_the_relay_made_shows_its_message_id(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    await store.suppress(
        [
            Suppressed(
                address="gone@example.org", reason=Reason.BOUNCE, created_at=T0, message_id="m1"
            )
        ]
    )
    assert await call(http, "GET", f"{base}/api/v1/suppression/Gone@example.org") == (
        200,
        {
            "emailAddress": "gone@example.org",
            "reason": "BOUNCE",
            "lastUpdateTime": "2026-12-01T09:30:00.000Z",
            "messageId": "m1",
            "configurationSet": None,
        },
    )


async def test_the_list_comes_in_pages_with_a_cursor(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    addresses = [f"u{n:02}@example.com" for n in range(25)]
    await store.suppress(
        [
            Suppressed(
                address=a, reason=Reason.COMPLAINT if n % 5 == 0 else Reason.BOUNCE, created_at=T0
            )
            for n, a in enumerate(addresses)
        ]
    )
    pages, after = [], ""
    while True:
        status, body = await call(
            http, "GET", f"{base}/api/v1/suppression", params={"limit": "10", "after": after}
        )
        assert status == 200
        pages.append([e["emailAddress"] for e in body["suppressedDestinations"]])
        if body["next"] is None:
            break
        after = body["next"]
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [a for page in pages for a in page] == addresses

    # Exactly a page left: no next page to ask for.
    status, body = await call(
        http,
        "GET",
        f"{base}/api/v1/suppression",
        params={"after": "U19@EXAMPLE.COM", "limit": "5"},
    )
    assert [e["emailAddress"] for e in body["suppressedDestinations"]] == addresses[20:]
    assert body["next"] is None

    status, body = await call(
        http, "GET", f"{base}/api/v1/suppression", params={"reason": "complaint"}
    )
    assert [e["emailAddress"] for e in body["suppressedDestinations"]] == addresses[::5]
    assert {e["reason"] for e in body["suppressedDestinations"]} == {"COMPLAINT"}

    status, body = await call(http, "GET", f"{base}/api/v1/suppression")  # default: 100
    assert (status, len(body["suppressedDestinations"]), body["next"]) == (200, 25, None)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "error"),
    [
        ("GET", "/jane", {}, "address 'jane': no local part and domain"),
        ("PUT", "/x@exa%20mple.com", {}, "address 'x@exa mple.com': malformed domain"),
        ("DELETE", "/a@b.example%0D%0ARCPT", {}, "address 'a@b.example\\r\\nRCPT': control"),
        ("GET", "/" + "x" * 600 + "@example.com", {}, "address 'xxxxxxxxxx"),
        ("PUT", "/a@example.com", {"json": {"reason": "spam"}}, "reason: unknown reason 'spam'"),
        ("PUT", "/a@example.com", {"json": {"reason": 3}}, "reason: 3 is not one of BOUNCE"),
        ("PUT", "/a@example.com", {"json": {"Reason": "BOUNCE"}}, "body: unknown field 'Reason'"),
        ("PUT", "/a@example.com", {"json": ["BOUNCE"]}, "body: a JSON object is expected"),
        ("PUT", "/a@example.com", {"data": b"reason=BOUNCE"}, "body: not JSON"),
        ("PUT", "/a@example.com", {"data": b"[" * 3000}, "body: not JSON"),
        ("PUT", "/a@example.com", {"data": b"\xff\xfe"}, "body: not JSON"),
        ("GET", "?limit=0", {}, "limit: '0' is not a number from 1 to 1000"),
        ("GET", f"?limit={PAGE_MAX + 1}", {}, "limit: '1001' is not a number from 1 to 1000"),
        ("GET", "?limit=" + "9" * 5000, {}, "limit: '99999999999999999999' is not a number"),
        ("GET", "?limit=%C2%B2", {}, "limit: '²' is not a number"),
        ("GET", "?reason=spam", {}, "reason: unknown reason 'spam': one of BOUNCE"),
        ("GET", "?reason=" + "B" * 100, {}, 'reason: "BBBBBBBB'),
        (
            "GET",
            "?page=2",
            {},
            "page: unknown parameter (known: after, limit, reason, config_set)",
        ),
        ("GET", "?after=" + "x" * 600, {}, "after: 'xxxxxxxx"),
    ],
)
async def test_bad_input_gets_400_naming_it_and_changes_nothing(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    error: str,
) -> None:
    base = await start_tracker()
    status, body = await call(http, method, f"{base}/api/v1/suppression{path}", **kwargs)
    assert status == 400
    assert body["error"].startswith(error)
    assert len(body["error"]) < 300  # what the client sent is not echoed whole
    assert await store.suppression_list() == []


async def test_a_body_past_the_limit_is_refused(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    url = f"{base}/api/v1/suppression/a@example.com"
    padded = b'{"reason": "BOUNCE"' + b" " * BODY_LIMIT + b"}"
    status, body = await call(http, "PUT", url, data=padded)
    assert (status, body) == (413, {"error": f"the body is larger than {BODY_LIMIT} bytes"})

    async def chunks() -> Any:  # no Content-Length: counted as it comes
        yield b'{"reason": '
        yield b" " * BODY_LIMIT
        yield b'"BOUNCE"}'

    status, body = await call(http, "PUT", url, data=chunks())
    assert status == 413
    assert await store.suppression_list() == []
    status, body = await call(http, "PUT", url, data=b'{"reason": "BOUNCE"}' + b" " * 100)
    assert (status, body["reason"]) == (200, "BOUNCE")


async def test_without_the_token_nothing_is_read_or_changed(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    access: Access,
) -> None:
    off = await start_tracker(token=None)
    status, body = await call(http, "GET", f"{off}/api/v1/suppression/a@example.com")
    assert status == 404
    assert "tracker.api_token" in body["error"]

    await store.suppress(
        [Suppressed(address="listed@example.com", reason=Reason.BOUNCE, created_at=T0)]
    )
    base = await start_tracker()
    url = f"{base}/api/v1/suppression"
    requests = [
        ("GET", url),
        ("GET", f"{url}/listed@example.com"),
        ("PUT", f"{url}/new@example.com"),
        ("PUT", f"{url}/not-an-address"),  # refused before the address is looked at
        ("DELETE", f"{url}/listed@example.com"),
    ]
    for method, target in requests:
        status, body = await call(http, method, target, headers={})
        assert status == 401, (method, target)
        assert body["error"].startswith("a bearer token is needed")
    status, body = await call(
        http, "DELETE", f"{url}/listed@example.com", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    assert body["error"].startswith("wrong token")
    assert [e.address for e in await store.suppression_list()] == ["listed@example.com"]

    # The dashboard's session is as good as the token, as for the statistics.
    cookie = {"Cookie": f"{COOKIE}={access.new_session()}"}
    status, body = await call(http, "GET", f"{url}/listed@example.com", headers=cookie)
    assert (status, body["reason"]) == (200, "BOUNCE")


async def test_the_command_line_and_the_api_see_one_list(
    start_tracker: TrackerStarter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = await start_tracker()
    config = tmp_path / "pixelpost.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{store.path}"\n')

    def cli(*args: str) -> Awaitable[int]:
        action, *rest = args
        # In a thread: the command runs its own event loop, as from a shell.
        return asyncio.to_thread(main, ["suppression", action, "-c", str(config), *rest])

    status, put = await call(
        http, "PUT", f"{base}/api/v1/suppression/Api@Example.com", json={"reason": "COMPLAINT"}
    )
    assert status == 200
    assert await cli("add", "CLI@example.com", "--reason", "unsubscribe") == 0
    capsys.readouterr()

    assert await cli("list", "--json") == 0
    from_cli = json.loads(capsys.readouterr().out)
    status, page = await call(http, "GET", f"{base}/api/v1/suppression")
    assert from_cli == page["suppressedDestinations"]
    assert [e["emailAddress"] for e in from_cli] == ["api@example.com", "cli@example.com"]
    assert from_cli[0] == put

    assert await cli("remove", "API@EXAMPLE.COM") == 0
    assert (await call(http, "GET", f"{base}/api/v1/suppression/api@example.com"))[0] == 404


async def test_a_configuration_sets_list_is_apart_from_the_accounts(
    start_tracker: TrackerStarter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    url = f"{base}/api/v1/suppression"
    status, body = await call(
        http, "PUT", f"{url}/jane@example.com?config_set=news", json={"reason": "UNSUBSCRIBE"}
    )
    assert status == 200
    assert (body["reason"], body["configurationSet"]) == ("UNSUBSCRIBE", "news")
    # Mail of that set stops; the account's list does not have it.
    assert await store.suppressed(["jane@example.com"], "news") == {"jane@example.com"}
    assert await store.suppressed(["jane@example.com"], "billing") == frozenset()
    assert (await call(http, "GET", f"{url}/jane@example.com"))[0] == 404
    assert await call(http, "GET", f"{url}/jane@example.com?config_set=news") == (200, body)
    page = await call(http, "GET", f"{url}?config_set=news")
    assert page == (200, {"suppressedDestinations": [body], "next": None})
    assert (await call(http, "GET", url))[1]["suppressedDestinations"] == []
    assert (await call(http, "DELETE", f"{url}/jane@example.com"))[0] == 404
    assert (await call(http, "DELETE", f"{url}/jane@example.com?config_set=news"))[0] == 204
    assert await store.suppressed(["jane@example.com"], "news") == frozenset()
    status, body = await call(http, "GET", f"{url}/jane@example.com?config_set=a%20b")
    assert (status, body["error"]) == (400, "config_set: 'a b' is not a configuration set's name")
