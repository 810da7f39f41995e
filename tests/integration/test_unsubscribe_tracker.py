"""/u/<token> over real HTTP, in the whole tracker application with the real SQLite
store: RFC 8058's one-click POST (also from the real curl, as Gmail sends it), the page
that changes nothing on GET, its buttons, forged and rotated tokens, bodies refused,
the store down, metrics and logs, templates replaced and translated."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pixelpost.config import parse_config_text
from pixelpost.core.ids import new_message_id
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.core.tokens import TokenCodec
from pixelpost.errors import ConfigError
from pixelpost.store import MessageRecord, SQLiteStore
from tests.conftest import AppServer, published, recorded
from tests.tools import need
from tracker.app import create_app
from tracker.auth import Access
from tracker.metrics import Metrics
from tracker.pages import load_pages
from tracker.unsubscribe import BODY_LIMIT, HEADERS, ONE_CLICK_DONE, RETRY_AFTER, UnsubscribeViews
from tracker.views import NOT_FOUND, Views

KEY, OLD_KEY = os.urandom(32), os.urandom(32)
codec = TokenCodec([KEY, OLD_KEY])
"""The tracker's: it signs with KEY and still verifies what OLD_KEY signed."""
ADDRESS = "Jane.Doe@Example.org"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
Starter = Callable[..., Awaitable[str]]


@pytest.fixture
def start_tracker(store: SQLiteStore, serve_app: AppServer) -> Starter:
    """Starts the whole tracker application with /u/, its templates from `templates`
    (None: the built-in ones), counting in `metrics`; returns the base URL."""

    async def start(*, templates: Path | None = None, metrics: Metrics | None = None) -> str:
        metrics = metrics or Metrics()
        views = Views(
            codec=codec, recorder=store, trusted_proxies=(), anonymize_ip=False, metrics=metrics
        )
        unsubscribe = UnsubscribeViews(
            codec=codec, subscriptions=store, pages=load_pages(templates), metrics=metrics
        )
        app = create_app(
            views=views,
            metrics=metrics,
            access=Access(None),
            stats=store,
            suppression=store,
            unsubscribe=unsubscribe,
        )
        return await serve_app(app)

    return start


async def a_copy(store: SQLiteStore, config_set: str = "marketing") -> str:
    """A copy the relay sent through `config_set`, as the store records it."""
    message_id = new_message_id()
    mail = f'{{"messageId": "{message_id}", "destination": ["{ADDRESS}"]}}'
    await store.record(
        messages=[
            MessageRecord(
                id=message_id, config_set=config_set, created_at=datetime.now(UTC), mail=mail
            )
        ]
    )
    return message_id


def url_of(
    base: str,
    message_id: str,
    *,
    account: bool = False,
    config_set: str = "marketing",
    signer: TokenCodec = codec,
    address: str = ADDRESS,
) -> str:
    token = signer.unsubscribe_token(
        message_id, address=address, config_set=config_set, account=account
    )
    return f"{base}/u/{token}"


def subscriptions(store: SQLiteStore) -> list[dict[str, Any]]:
    """The Subscription events in the store's log, oldest first."""
    return [detail for kind, _, detail in recorded(store) if kind == "subscription"]


def assert_headers(response: aiohttp.ClientResponse) -> None:
    for name, value in HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers["Content-Security-Policy"] == CSP
    assert "Location" not in response.headers


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.request(method, url, allow_redirects=False, **kwargs) as response:
        text = await response.text()
        assert_headers(response)
        return response.status, text, response


def main_text(page: str) -> str:
    """What the page's <main> says, tags and spacing left out."""
    found = re.search(r"<main>(.*)</main>", page, re.DOTALL)
    assert found, page
    return " ".join(re.sub(r"<[^>]+>", " ", found[1]).split())


@pytest.mark.parametrize("account", [False, True], ids=["config_set", "account"])
@pytest.mark.parametrize("form", ["urlencoded", "multipart"])
async def test_one_click_post_unsubscribes_at_once_and_once(
    start_tracker: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    account: bool,
    form: str,
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    url = url_of(base, message_id, account=account)

    def body() -> Any:
        if form == "urlencoded":
            return ONE_CLICK
        return aiohttp.FormData(ONE_CLICK, default_to_multipart=True)

    status, text, response = await fetch(http, "POST", url, data=body())
    assert (status, text) == (200, ONE_CLICK_DONE)
    expected = "application/x-www-form-urlencoded" if form == "urlencoded" else "multipart"
    assert response.request_info.headers["Content-Type"].startswith(expected)

    scope = None if account else "marketing"
    entry = await store.suppression("jane.doe@example.org", scope)
    assert entry is not None
    assert (entry.reason, entry.message_id, entry.config_set) == (
        Reason.UNSUBSCRIBE,
        message_id,
        scope,
    )
    other_scope = "marketing" if account else None
    assert await store.suppression("jane.doe@example.org", other_scope) is None
    # What the relay asks before it sends: the recipient is suppressed for that mail.
    assert await store.suppressed(["jane.doe@example.org"], "marketing") == {
        "jane.doe@example.org"
    }
    others = await store.suppressed(["jane.doe@example.org"], "default")
    assert others == ({"jane.doe@example.org"} if account else frozenset())

    # A provider that sends it again (a retry, a second click) makes no second event.
    status, text, _ = await fetch(http, "POST", url, data=body())
    assert (status, text) == (200, ONE_CLICK_DONE)
    [event] = await published(store)
    assert event["eventType"] == "Subscription"
    assert event["mail"]["messageId"] == message_id
    subscription = event["subscription"]
    assert subscription["source"] == "UnsubscribeHeader"
    assert subscription["contactList"] == "marketing"
    assert subscription["scope"] == ("account" if account else "config_set")
    assert subscription["newTopicPreferences"]["unsubscribeAll"] is True
    assert subscription["oldTopicPreferences"]["unsubscribeAll"] is False


async def test_get_and_head_show_the_page_and_change_nothing(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    url = url_of(base, message_id)
    counts = await store.event_counts()

    status, page, response = await fetch(http, "GET", url)
    assert status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert main_text(page) == (
        f"Unsubscribe Unsubscribe {ADDRESS} from marketing's mail? Unsubscribe"
    )
    assert '<html lang="en">' in page
    assert re.search(
        r'<form method="post"[^>]*>\s*<input type="hidden" name="action" '
        r'value="unsubscribe">\s*<button type="submit">Unsubscribe</button>',
        page,
    )
    status, empty, response = await fetch(http, "HEAD", url)
    assert (status, empty) == (200, "")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"

    status, page, _ = await fetch(http, "GET", url_of(base, message_id, account=True))
    assert status == 200
    assert f"Unsubscribe {ADDRESS} from all mail from this sender?" in main_text(page)

    assert await store.event_counts() == counts
    assert recorded(store) == []
    assert await store.suppression("jane.doe@example.org", "marketing") is None
    assert await store.suppression("jane.doe@example.org") is None


async def test_the_page_buttons_unsubscribe_and_subscribe_again(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    url = url_of(base, message_id)

    status, page, _ = await fetch(http, "POST", url, data={"action": "unsubscribe"})
    assert status == 200
    assert main_text(page).startswith(
        f"You are unsubscribed {ADDRESS} is unsubscribed from marketing's mail."
    )
    assert 'name="action" value="resubscribe"' in page
    # Pressed twice (or the page reloaded): the same page, no second event.
    assert (await fetch(http, "POST", url, data={"action": "unsubscribe"}))[1] == page
    # Opened again later, the link says so and changes nothing.
    assert (await fetch(http, "GET", url))[1] == page
    [unsubscribed] = subscriptions(store)
    assert unsubscribed["source"] == "UnsubscribeLink"
    assert unsubscribed["newTopicPreferences"]["unsubscribeAll"] is True

    status, page, _ = await fetch(http, "POST", url, data={"action": "resubscribe"})
    assert status == 200
    assert main_text(page) == (
        f"You are subscribed again {ADDRESS} is subscribed to marketing's mail again. Unsubscribe"
    )
    assert 'name="action" value="unsubscribe"' in page
    assert await store.suppression("jane.doe@example.org", "marketing") is None
    assert (await fetch(http, "POST", url, data={"action": "resubscribe"}))[1] == page
    assert (await fetch(http, "GET", url))[1].count('value="unsubscribe"') == 1

    events = await published(store)
    assert [e["subscription"]["newTopicPreferences"]["unsubscribeAll"] for e in events] == [
        True,
        False,
    ]
    resubscribed = events[1]["subscription"]
    assert (resubscribed["source"], resubscribed["contactList"], resubscribed["scope"]) == (
        "UnsubscribeLink",
        "marketing",
        "config_set",
    )


async def test_a_bounced_address_stays_on_the_list(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    bounced = Suppressed(
        address="jane.doe@example.org",
        reason=Reason.BOUNCE,
        created_at=datetime.now(UTC),
        message_id="m0",
    )
    await store.suppress([bounced])
    url = url_of(base, message_id, account=True)

    status, page, _ = await fetch(http, "GET", url)
    assert status == 200
    assert main_text(page).startswith("No mail goes to this address")
    assert "<form" not in page
    status, page, _ = await fetch(http, "POST", url, data={"action": "resubscribe"})
    assert (status, main_text(page).split(" The sender")[0]) == (
        200,
        "No mail goes to this address",
    )
    assert await store.suppression("jane.doe@example.org") == bounced
    status, text, _ = await fetch(http, "POST", url, data=ONE_CLICK)
    assert (status, text) == (200, ONE_CLICK_DONE)  # no mail goes there: done already
    assert await store.suppression("jane.doe@example.org") == bounced
    assert subscriptions(store) == []


def flipped(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


async def test_forged_damaged_and_unknown_key_tokens_get_404(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    metrics = Metrics()
    base = await start_tracker(metrics=metrics)
    message_id = await a_copy(store)
    token = codec.unsubscribe_token(
        message_id, address=ADDRESS, config_set="marketing", account=False
    )
    bad = [
        flipped(token, 3),  # the key id
        flipped(token, 10),  # the copy's id
        flipped(token, 40),  # the SIV tag
        flipped(token, len(token) - 2),  # the sealed address
        token[:-4],
        token + "AAAA",
        TokenCodec([os.urandom(32)]).unsubscribe_token(
            message_id, address=ADDRESS, config_set="marketing", account=False
        ),
        codec.open_token(message_id),
        "x",
    ]
    for forged in bad:
        for method, kwargs in (("GET", {}), ("POST", {"data": ONE_CLICK})):
            status, text, response = await fetch(http, method, f"{base}/u/{forged}", **kwargs)
            assert (status, text) == (404, NOT_FOUND), forged
            assert response.headers["Content-Type"].startswith("text/plain")
    # The same page as a damaged click's.
    async with http.get(f"{base}/c/{token}/x", allow_redirects=False) as response:
        assert (response.status, await response.text()) == (404, NOT_FOUND)

    assert recorded(store) == []
    assert await store.suppression("jane.doe@example.org", "marketing") is None
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    assert f'pixelpost_invalid_tokens_total{{route="unsubscribe"}} {2.0 * len(bad)}' in text


async def test_a_rotated_key_still_verifies_and_a_retired_one_does_not(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    # Made before the rotation, when OLD_KEY signed: it is still configured, second.
    before = url_of(base, message_id, signer=TokenCodec([OLD_KEY]))
    status, text, _ = await fetch(http, "POST", before, data=ONE_CLICK)
    assert (status, text) == (200, ONE_CLICK_DONE)
    assert len(subscriptions(store)) == 1

    # Made with a key rotated out since (no longer configured): refused.
    retired = url_of(base, message_id, signer=TokenCodec([os.urandom(32), KEY]))
    for method in ("GET", "POST"):
        status, text, _ = await fetch(http, method, retired, data=ONE_CLICK)
        assert (status, text) == (404, NOT_FOUND)
    assert len(subscriptions(store)) == 1


async def test_bodies_that_are_not_an_unsubscribe_are_refused_and_say_why(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    url = url_of(base, await a_copy(store))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": b"", "headers": form}, 400, "neither List-Unsubscribe=One-Click"),
        ({"data": b"\x00\xff\xfe garbage", "headers": form}, 400, "not percent-encoded UTF-8"),
        ({"data": b"hello=world", "headers": form}, 400, "neither List-Unsubscribe=One-Click"),
        ({"data": {"List-Unsubscribe": "Yes"}}, 400, "List-Unsubscribe is 'Yes', not One-Click"),
        ({"data": {"action": "delete"}}, 400, "action is 'delete', not unsubscribe"),
        (
            {"data": {"action": "resubscribe", "List-Unsubscribe": "One-Click"}},
            400,
            "asks for List-Unsubscribe=One-Click and action=resubscribe",
        ),
        (
            {"data": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "text/plain"}},
            415,
            "Content-Type 'text/plain'",
        ),
        (
            {"data": b"--x--", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "without a boundary",
        ),
        ({"data": b"a=" + b"x" * BODY_LIMIT, "headers": form}, 413, "larger than 4096 bytes"),
    ]
    for kwargs, expected_status, expected_text in cases:
        status, text, _ = await fetch(http, "POST", url, **kwargs)
        assert status == expected_status, (kwargs, text)
        assert expected_text in text, (kwargs, text)

    # Without a Content-Length (chunked), the read stops past the bound.
    async def chunks() -> Any:
        for _ in range(4):
            yield b"List-Unsubscribe=One-Click&pad=" + b"x" * 2000

    status, text, _ = await fetch(http, "POST", url, data=chunks(), headers=form)
    assert (status, text) == (413, f"the body is larger than {BODY_LIMIT} bytes\n")
    status, text, response = await fetch(http, "PUT", url, data=ONE_CLICK)
    assert (status, response.headers["Allow"]) == (405, "GET, HEAD, POST")
    assert subscriptions(store) == []

    # What is left is an unsubscribe; fields beside it are left alone.
    status, text, _ = await fetch(
        http, "POST", url, data=b"List-Unsubscribe=One-Click&utm=x", headers=form
    )
    assert (status, text) == (200, ONE_CLICK_DONE)


async def test_a_store_that_fails_gets_503_and_never_200(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    metrics = Metrics()
    base = await start_tracker(metrics=metrics)
    url = url_of(base, await a_copy(store))
    await store.close()

    status, text, response = await fetch(http, "POST", url, data=ONE_CLICK)
    assert status == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    assert "try again" in text
    for method, kwargs in (
        ("GET", {}),
        ("POST", {"data": {"action": "unsubscribe"}}),
        ("POST", {"data": {"action": "resubscribe"}}),
    ):
        status, page, response = await fetch(http, method, url, **kwargs)
        assert status == 503
        assert response.headers["Retry-After"] == str(RETRY_AFTER)
        assert main_text(page).startswith("Please try again")
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    assert 'pixelpost_unsubscribes_total{outcome="failed",source="UnsubscribeHeader"} 1.0' in text
    assert 'pixelpost_unsubscribes_total{outcome="failed",source="UnsubscribeLink"} 1.0' in text
    assert 'pixelpost_resubscribes_total{outcome="failed"} 1.0' in text


async def test_metrics_count_outcomes_and_the_log_names_the_copy_not_the_address(
    start_tracker: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    url = url_of(base, message_id)
    with caplog.at_level(logging.INFO, logger="tracker.unsubscribe"):
        await fetch(http, "POST", url, data=ONE_CLICK)
        await fetch(http, "POST", url, data=ONE_CLICK)
        await fetch(http, "POST", url, data={"action": "resubscribe"})
        await fetch(http, "POST", url, data={"action": "resubscribe"})
        await fetch(http, "POST", url, data={"action": "unsubscribe"})
    lines = [r.getMessage() for r in caplog.records if r.name == "tracker.unsubscribe"]
    assert lines == [
        f"{message_id}: unsubscribed (config set marketing, UnsubscribeHeader)",
        f"{message_id}: subscribed again (config set marketing, UnsubscribeLink)",
        f"{message_id}: unsubscribed (config set marketing, UnsubscribeLink)",
    ]
    assert not [r for r in caplog.records if "example.org" in r.getMessage().lower()]

    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    for line in (
        'pixelpost_unsubscribes_total{outcome="unsubscribed",source="UnsubscribeHeader"} 1.0',
        'pixelpost_unsubscribes_total{outcome="already",source="UnsubscribeHeader"} 1.0',
        'pixelpost_unsubscribes_total{outcome="unsubscribed",source="UnsubscribeLink"} 1.0',
        'pixelpost_resubscribes_total{outcome="resubscribed"} 1.0',
        'pixelpost_resubscribes_total{outcome="unchanged"} 1.0',
        'pixelpost_http_request_duration_seconds_count{route="unsubscribe"} 5.0',
    ):
        assert line in text
    assert len(subscriptions(store)) == 3


async def test_curl_posts_as_gmail_does(start_tracker: Starter, store: SQLiteStore) -> None:
    base = await start_tracker()
    message_id = await a_copy(store)
    process = await asyncio.create_subprocess_exec(
        need("curl"),
        "-s",
        "-i",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data",
        "List-Unsubscribe=One-Click",
        url_of(base, message_id),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    head, _, body = out.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "\r\nlocation:" not in head.lower()
    assert body == ONE_CLICK_DONE
    [event] = subscriptions(store)
    assert event["source"] == "UnsubscribeHeader"
    assert await store.suppression("jane.doe@example.org", "marketing") is not None


async def test_values_are_escaped_in_the_page(
    start_tracker: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base = await start_tracker()
    url = url_of(
        base, await a_copy(store), config_set='<b>"sale"</b>&co', address="o'neil@example.org"
    )
    status, page, _ = await fetch(http, "GET", url)
    assert status == 200
    assert "o&#x27;neil@example.org" in page
    assert "&lt;b&gt;&quot;sale&quot;&lt;/b&gt;&amp;co's mail" in page
    assert "<b>" not in page


TRANSLATED = """<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Abmelden</title></head>
<body><main><h1>Abmelden</h1><p>$address von $list abmelden?</p>
<form method="post"><input type="hidden" name="action" value="unsubscribe">
<button type="submit">Abmelden</button></form></main></body></html>
"""
OWN = TRANSLATED.replace('lang="de"', 'lang="en"').replace(
    "<p>$address von $list abmelden?</p>", "<p>Stop $list for $address? (ACME)</p>"
)


def templates_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    (folder / "de").mkdir(parents=True)
    (folder / "unsubscribe.html").write_text(OWN)
    (folder / "de" / "unsubscribe.html").write_text(TRANSLATED)
    (folder / "de" / "list_config_set.html").write_text("den Newsletter „$config_set“\n")
    return folder


@pytest.mark.parametrize(
    ("accept_language", "expected", "language"),
    [
        (None, "Stop marketing's mail for Jane.Doe@Example.org? (ACME)", "en"),
        ("de", "Jane.Doe@Example.org von den Newsletter „marketing“ abmelden?", "de"),
        ("de-CH, en;q=0.8", "Jane.Doe@Example.org von den Newsletter „marketing“ abmelden?", "de"),
        ("fr-FR, fr;q=0.9, de;q=0.5", "von den Newsletter „marketing“", "de"),
        # The page outside the language folders says it is English: preferred, it wins.
        ("en-GB;q=0.9, de;q=0.2", "Stop marketing's mail", "en"),
        ("en, de;q=0.9", "Stop marketing's mail", "en"),
        ("DE;q=0, fr", "Stop marketing's mail", "en"),
        ("*", "Stop marketing's mail", "en"),
        ("de;q=bogus, fr", "Stop marketing's mail", "en"),
    ],
)
async def test_templates_are_replaced_and_translated_by_accept_language(
    start_tracker: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    tmp_path: Path,
    accept_language: str | None,
    expected: str,
    language: str | None,
) -> None:
    base = await start_tracker(templates=templates_folder(tmp_path))
    url = url_of(base, await a_copy(store))
    headers = {"Accept-Language": accept_language} if accept_language else {}
    status, page, response = await fetch(http, "GET", url, headers=headers)
    assert status == 200
    assert expected in page
    assert response.headers.get("Content-Language") == language
    assert response.headers["Vary"] == "Accept-Language"
    # The pages the folder does not replace are the built-in ones, in English.
    status, page, _ = await fetch(
        http, "POST", url, data={"action": "unsubscribe"}, headers=headers
    )
    assert main_text(page).startswith("You are unsubscribed")


def test_a_templates_key_that_is_no_folder_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file.html").write_text("x")
    for value, why in (
        (str(tmp_path / "nowhere"), "it does not exist"),
        (str(tmp_path / "file.html"), "it is a file"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config_text(f'[tracker]\ntemplates = "{value}"\n', environ={})
        assert raised.value.problems == (
            f'tracker.templates: "{value}" is not a folder of templates ({why})',
        )
    (tmp_path / "pages").mkdir()
    config = parse_config_text(
        '[tracker]\ntemplates = "pages"\n', environ={}, source=tmp_path / "p.toml"
    )
    assert config.tracker.templates == tmp_path / "pages"
    assert parse_config_text("", environ={}).tracker.templates is None


def test_templates_that_do_not_fit_stop_the_start_naming_the_file(tmp_path: Path) -> None:
    folder = templates_folder(tmp_path)
    (folder / "unsubscribed.html").write_text("<p>$address left $lists</p>")
    (folder / "de" / "resubscribed.html").write_text("<p>$list</p>")
    (folder / "goodbye.html").write_text("<p>bye</p>")
    (folder / "Deutsch!").mkdir()
    with pytest.raises(ConfigError) as raised:
        load_pages(folder)
    assert raised.value.problems == (
        f"tracker.templates: {folder}/goodbye.html: not a template pixelpost uses "
        "(list_account.html, list_config_set.html, resubscribed.html, suppressed.html, "
        "unavailable.html, unsubscribe.html, unsubscribed.html)",
        f"tracker.templates: {folder}/unsubscribed.html: unknown placeholder $lists "
        "(this template knows $address, $config_set, $list)",
        f"tracker.templates: {folder}/unsubscribed.html: the placeholder $list is missing",
        f"tracker.templates: {folder / 'Deutsch!'}: not a language tag (de, pt-BR …) for "
        "translations",
        f"tracker.templates: {folder / 'de'}/resubscribed.html: the placeholder $address is "
        "missing",
    )
