"""The tracker's /sns/ routes on a real aiohttp server and the real SQLite store: the
signing certificate at its fingerprint's URL, the SubscribeURL and the UnsubscribeURL
changing the subscription in the store, and its state on /metrics."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pixelpost.app.runtime import start_tracker
from pixelpost.config import parse_config_text
from pixelpost.errors import ConfigError
from pixelpost.store import SnsSubscription, SQLiteStore
from tests.conftest import AppServer, codec_for, config_text, make_config, until
from tracker.app import create_app
from tracker.auth import Access
from tracker.metrics import Metrics
from tracker.sns import PARAMETER_LIMIT, SnsViews
from tracker.views import Views

TOPIC = "arn:pixelpost:sns:local:0:app"
ARN = f"{TOPIC}:0f8c6f3e-6a43-4c51-9b0e-7d1c8f0b2a11"
TOKEN = "2336412f37fb687f5d51e6e2425c464de257a3b7f7c1b8e1f4a2b7b54e5d9c0a"
XMLNS = {"sns": "http://sns.amazonaws.com/doc/2010-03-31/"}

Started = tuple[str, Metrics]
Starter = Callable[[], Awaitable[Started]]


def certificate_pem() -> bytes:
    """An X.509 certificate, as `pixelpost sns keygen` writes one (PEM)."""
    return trustme.CA().issue_cert("sns.pixelpost.test").cert_chain_pems[0].bytes()


def fingerprint_of(pem: bytes) -> str:
    """The contract's fingerprint, computed here on its own: the first 32 hex
    characters of SHA-256 over the certificate's DER."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:32]


def pending(*, destination: str = "app", arn: str = ARN, token: str = TOKEN) -> SnsSubscription:
    now = time.time()
    return SnsSubscription(
        destination=destination,
        arn=arn,
        endpoint="https://app.example.com/ses/events",
        topic_arn=TOPIC,
        token=token,
        state="pending",
        requested_at=now,
        changed_at=now,
    )


@pytest.fixture
def pem() -> bytes:
    return certificate_pem()


@pytest.fixture
def start(tmp_path: Path, store: SQLiteStore, serve_app: AppServer, pem: bytes) -> Starter:
    """Serves the tracker's application with its /sns/ routes on `store`."""

    async def run() -> Started:
        config = make_config("maildir:./outbox", tmp_path)
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
            sns=SnsViews(subscriptions=store, certificate=pem, topics=[TOPIC]),
        )
        return await serve_app(app), metrics

    return run


def query(**parameters: str) -> str:
    return urlencode(parameters)


async def test_the_certificate_is_served_at_its_fingerprint_only(
    start: Starter, http: aiohttp.ClientSession, pem: bytes
) -> None:
    base, _ = await start()
    fingerprint = fingerprint_of(pem)
    async with http.get(f"{base}/sns/SimpleNotificationService-{fingerprint}.pem") as response:
        assert response.status == 200
        assert response.content_type in ("application/x-pem-file", "text/plain")
        body = await response.read()
    assert body == pem
    assert fingerprint_of(body) == fingerprint  # what a consumer loads is that certificate

    other = fingerprint_of(certificate_pem())
    for name in (
        f"SimpleNotificationService-{other}.pem",
        f"SimpleNotificationService-{fingerprint[:-1]}.pem",
        f"SimpleNotificationService-{fingerprint}.crt",
        "SimpleNotificationService-.pem",
    ):
        async with http.get(f"{base}/sns/{name}") as response:
            assert response.status == 404, name
            assert b"BEGIN CERTIFICATE" not in await response.read()


async def test_an_arn_of_no_topic_of_ours_is_refused_unasked_and_logged_once_a_minute(
    start: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, _ = await start()
    made = await store.sns_subscribe(pending())
    other_topic = "arn:pixelpost:sns:local:0:other:" + ARN.rpartition(":")[2]
    forged = [
        f"{TOPIC}:not-a-uuid",
        other_topic,
        f"{ARN}\nWARNING forged log line",
        ARN.upper(),  # a UUID, but not as pixelpost writes one
    ]
    with caplog.at_level(logging.INFO, logger="tracker.sns"):
        for arn in forged:
            for path, extra in (("unsubscribe", {}), ("confirm", {"Token": TOKEN})):
                url = f"{base}/sns/{path}?{query(SubscriptionArn=arn, **extra)}"
                async with http.get(url) as response:
                    assert response.status == 404, (path, arn)
    assert await store.sns_subscription("app") == made  # nothing changed
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1  # 8 refusals, one line: anyone may send them
    assert "forged" not in caplog.text


async def test_the_subscribe_url_confirms_with_its_token_only(
    start: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, _ = await start()
    await store.sns_subscribe(pending())

    wrong = TOKEN[:-1] + ("b" if TOKEN[-1] != "b" else "c")
    for arn, token in ((ARN, wrong), (ARN, TOKEN[:-1]), (f"{TOPIC}:no-such-uuid", TOKEN)):
        async with http.get(f"{base}/sns/confirm?{query(SubscriptionArn=arn, Token=token)}") as r:
            assert r.status == 404, (arn, token)
            assert r.content_type == "text/plain"
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "pending"

    # A HEAD (a link scanner, a prefetch) changes nothing.
    async with http.head(f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}") as r:
        assert r.status == 405
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "pending"

    with caplog.at_level(logging.INFO, logger="tracker.sns"):
        url = f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}"
        async with http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "text/xml"
            document = ET.fromstring(await response.read())
    assert document.tag == f"{{{XMLNS['sns']}}}ConfirmSubscriptionResponse"
    assert document.findtext("sns:ConfirmSubscriptionResult/sns:SubscriptionArn", None, XMLNS) == (
        ARN
    )
    assert document.findtext("sns:ResponseMetadata/sns:RequestId", None, XMLNS)
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "confirmed"
    said = [r.getMessage() for r in caplog.records if r.name == "tracker.sns"]
    assert any(
        line.startswith("sns: destination app's endpoint confirmed its subscription")
        for line in said
    ), said
    assert not any(TOKEN in line for line in said)

    # The endpoint visiting it again (SNS's endpoints do retry) changes nothing.
    async with http.get(url) as response:
        assert response.status == 200
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "confirmed"


async def test_the_unsubscribe_url_ends_the_subscription(
    start: Starter,
    http: aiohttp.ClientSession,
    store: SQLiteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, _ = await start()
    await store.sns_subscribe(pending())
    assert await store.sns_confirm(ARN, TOKEN) is not None

    async with http.get(f"{base}/sns/unsubscribe?{query(SubscriptionArn=f'{ARN}x')}") as r:
        assert r.status == 404
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "confirmed"

    with caplog.at_level(logging.INFO, logger="tracker.sns"):
        async with http.get(f"{base}/sns/unsubscribe?{query(SubscriptionArn=ARN)}") as response:
            assert response.status == 200
            document = ET.fromstring(await response.read())
    assert document.tag == f"{{{XMLNS['sns']}}}UnsubscribeResponse"
    assert document.findtext("sns:ResponseMetadata/sns:RequestId", None, XMLNS)
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "unsubscribed"
    assert any(
        r.getMessage().startswith("sns: destination app's endpoint unsubscribed")
        for r in caplog.records
    )

    # Once ended, its SubscribeURL no longer brings it back.
    async with http.get(f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}") as r:
        assert r.status == 404
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "unsubscribed"


@pytest.mark.parametrize(
    "parameters",
    [
        "",
        query(SubscriptionArn=ARN),
        query(Token=TOKEN),
        query(SubscriptionArn="", Token=TOKEN),
        query(SubscriptionArn=ARN, Token="t" * (PARAMETER_LIMIT + 1)),
        query(SubscriptionArn="a" * (PARAMETER_LIMIT + 1), Token=TOKEN),
        f"{query(SubscriptionArn=ARN, Token=TOKEN)}&Token={TOKEN}",
    ],
)
async def test_a_bad_subscribe_url_is_400_and_changes_nothing(
    start: Starter, http: aiohttp.ClientSession, store: SQLiteStore, parameters: str
) -> None:
    base, _ = await start()
    await store.sns_subscribe(pending())
    async with http.get(f"{base}/sns/confirm?{parameters}") as response:
        assert response.status == 400
        assert re.search(r"SubscriptionArn|Token", await response.text())
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "pending"


@pytest.mark.parametrize(
    "parameters", ["", query(SubscriptionArn="a" * (PARAMETER_LIMIT + 1)), "SubscriptionArn="]
)
async def test_a_bad_unsubscribe_url_is_400(
    start: Starter, http: aiohttp.ClientSession, store: SQLiteStore, parameters: str
) -> None:
    base, _ = await start()
    await store.sns_subscribe(pending())
    async with http.get(f"{base}/sns/unsubscribe?{parameters}") as response:
        assert response.status == 400
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "pending"


async def test_a_store_that_fails_is_503_never_a_confirmation(
    start: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base, _ = await start()
    await store.sns_subscribe(pending())
    await store.close()  # the store is gone: reads and writes fail
    async with http.get(f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}") as r:
        assert r.status == 503
        assert r.headers["Retry-After"]
    async with http.get(f"{base}/sns/unsubscribe?{query(SubscriptionArn=ARN)}") as r:
        assert r.status == 503


def gauge(text: str, destination: str) -> dict[str, float]:
    """The subscription gauge's samples for `destination`: {state: value}."""
    found = re.findall(
        rf'^pixelpost_sns_subscription\{{destination="{destination}",state="(\w+)"\}} (\S+)$',
        text,
        re.MULTILINE,
    )
    return {state: float(value) for state, value in found}


async def test_metrics_show_each_subscription_state(
    start: Starter, http: aiohttp.ClientSession, store: SQLiteStore
) -> None:
    base, metrics = await start()
    await store.sns_subscribe(pending())
    await store.sns_subscribe(
        pending(
            destination="crm", arn=f"{TOPIC}:5d3c0b0e-2f7a-4c1e-8a55-3b0d9e6f1c22", token="crm-t"
        )
    )
    await metrics.refresh(store, subscriptions=store)

    async def scraped() -> str:
        async with http.get(f"{base}/metrics") as response:
            return await response.text()

    text = await scraped()
    assert gauge(text, "app") == {"pending": 1, "confirmed": 0, "unsubscribed": 0}
    assert gauge(text, "crm") == {"pending": 1, "confirmed": 0, "unsubscribed": 0}

    async with http.get(f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}") as r:
        assert r.status == 200
    async with http.get(
        f"{base}/sns/unsubscribe?{query(SubscriptionArn=f'{TOPIC}:5d3c0b0e-2f7a-4c1e-8a55-3b0d9e6f1c22')}"
    ) as r:
        assert r.status == 200
    await metrics.refresh(store, subscriptions=store)
    text = await scraped()
    assert gauge(text, "app") == {"pending": 0, "confirmed": 1, "unsubscribed": 0}
    assert gauge(text, "crm") == {"pending": 0, "confirmed": 0, "unsubscribed": 1}


def sns_config_text(tmp_path: Path, certificate: Path) -> str:
    """The tests' configuration with an SNS-compatible destination and its `[sns]`."""
    text = config_text("maildir:./outbox", tmp_path, tracker=f'journal = "{tmp_path / "hits"}"')
    return text + (
        f'[destinations.app]\ntype = "sns"\nurl = "https://app.example.com/ses/events"\n'
        f'[sns]\nkey = "{tmp_path / "sns-key.pem"}"\ncertificate = "{certificate}"\n'
    )


@pytest.fixture
async def runtime_tracker(
    store: SQLiteStore,
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Starts the tracker as `pixelpost tracker` assembles it from a configuration's
    text; its base URL."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(text: str) -> str:
            config = parse_config_text(text, environ={})
            server = await start_tracker(config, stack, store, store, api_token=None, probes=())
            return f"http://{server.address}"

        yield run


async def test_the_runtime_serves_the_configured_certificate_and_gauges_subscriptions(
    tmp_path: Path,
    store: SQLiteStore,
    http: aiohttp.ClientSession,
    runtime_tracker: Callable[[str], Awaitable[str]],
    pem: bytes,
) -> None:
    certificate = tmp_path / "sns-cert.pem"
    certificate.write_bytes(pem)
    await store.sns_subscribe(pending())
    await store.sns_subscribe(
        pending(
            destination="crm", arn=f"{TOPIC}:5d3c0b0e-2f7a-4c1e-8a55-3b0d9e6f1c22", token="crm-t"
        )
    )
    assert await store.sns_confirm(ARN, TOKEN) is not None
    base = await runtime_tracker(sns_config_text(tmp_path, certificate))

    async with http.get(f"{base}/sns/SimpleNotificationService-{fingerprint_of(pem)}.pem") as r:
        assert r.status == 200
        assert await r.read() == pem
    async with http.get(
        f"{base}/sns/unsubscribe?{query(SubscriptionArn=f'{TOPIC}:5d3c0b0e-2f7a-4c1e-8a55-3b0d9e6f1c22')}"
    ) as r:
        assert r.status == 200
    stored = await store.sns_subscription("crm")
    assert stored is not None
    assert stored.state == "unsubscribed"

    async def on_metrics() -> dict[str, float]:
        async with http.get(f"{base}/metrics") as response:
            return gauge(await response.text(), "app")

    # Read from the store on the first refresh, at the start.
    found = await until(on_metrics, "the subscription's gauge on /metrics")
    assert found == {"pending": 0, "confirmed": 1, "unsubscribed": 0}


async def test_without_an_sns_destination_there_is_no_sns_route_nor_gauge(
    tmp_path: Path,
    store: SQLiteStore,
    http: aiohttp.ClientSession,
    runtime_tracker: Callable[[str], Awaitable[str]],
) -> None:
    await store.sns_subscribe(pending())  # left behind by a destination since removed
    text = config_text("maildir:./outbox", tmp_path, tracker=f'journal = "{tmp_path / "hits"}"')
    base = await runtime_tracker(text)
    async with http.get(f"{base}/sns/confirm?{query(SubscriptionArn=ARN, Token=TOKEN)}") as r:
        assert r.status == 404
    stored = await store.sns_subscription("app")
    assert stored is not None
    assert stored.state == "pending"
    async with http.get(f"{base}/metrics") as response:
        metrics = await response.text()
    assert "pixelpost_events_recorded" in metrics  # refreshed from the store
    assert "pixelpost_sns_subscription" not in metrics


@pytest.mark.parametrize("trouble", ["missing", "not a certificate"])
async def test_an_unreadable_certificate_stops_the_start_naming_it(
    tmp_path: Path, runtime_tracker: Callable[[str], Awaitable[str]], trouble: str
) -> None:
    certificate = tmp_path / "sns-cert.pem"
    if trouble == "not a certificate":
        certificate.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as raised:
        await runtime_tracker(sns_config_text(tmp_path, certificate))
    assert str(raised.value).startswith("sns.certificate: ")
    assert str(certificate) in str(raised.value)
