"""The URLs an SNS-compatible destination's messages send its endpoint to, served under
/sns/ when such a destination is configured (`pixelpost.core.sns` builds them):

    GET /sns/SimpleNotificationService-<fp>.pem   SigningCertURL: the certificate that
                                                  verifies the signatures (404 for
                                                  another fingerprint)
    GET /sns/confirm?SubscriptionArn=…&Token=…    SubscribeURL: confirms the subscription
    GET /sns/unsubscribe?SubscriptionArn=…        UnsubscribeURL: ends it

A confirmation or an unsubscribe is committed before its answer, Amazon's XML
response; an unknown subscription or a wrong token is 404, the store failing 503. A
SubscriptionArn that is not a configured topic's ARN and a UUID is refused before the
store is asked, and refusals are logged at most once a minute (anyone may send them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

from pixelpost.config import Config, SnsDestination
from pixelpost.core.sns import (
    CERTIFICATE_PATH,
    CONFIRM_PATH,
    UNSUBSCRIBE_PATH,
    SnsKeyError,
    fingerprint,
)
from pixelpost.errors import ConfigError
from pixelpost.logs import LogEvery
from pixelpost.store import SnsSubscription, SnsSubscriptions, StoreError

log = logging.getLogger(__name__)

PARAMETER_LIMIT = 512
"""Characters of a SubscriptionArn or a Token taken: pixelpost's tokens have 128, its
subscription ARNs their topic's ARN and 37 more."""
RETRY_AFTER = 30
"""Seconds an endpoint is asked to wait when the store cannot take a change."""
CERTIFICATE_TYPE = "application/x-pem-file"
CERTIFICATE_MAX_AGE = 86400
"""Seconds a consumer may keep the certificate: its URL names its fingerprint, so a new
key is a new URL."""
XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
NOT_FOUND = "No such subscription, or the token is not its token.\n"
UNAVAILABLE = "The subscription could not be changed just now; try again.\n"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
REFUSED_LOG_INTERVAL = 60.0


class BadParameters(ValueError):
    """A SubscribeURL's or UnsubscribeURL's query is missing a parameter or has one
    too long; the message says which."""


def load_certificate(path: Path) -> bytes:
    """The PEM certificate at `path` (`sns.certificate`); ConfigError naming the key
    and the file when it cannot be read or is no certificate."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [
                f"sns.certificate: cannot read {path}: {exc.strerror or exc}"
                " (make it with `pixelpost sns keygen`)"
            ]
        ) from None
    try:
        fingerprint(pem)
    except SnsKeyError as exc:
        raise ConfigError([f"sns.certificate: {path}: {exc}"]) from None
    return pem


def _parameters(request: web.Request, *names: str) -> list[str]:
    """The query's `names`, once each and at most `PARAMETER_LIMIT` characters."""
    values: list[str] = []
    for name in names:
        given = request.query.getall(name, [])
        if len(given) != 1:
            raise BadParameters(f"{name} must be given once")
        if not given[0] or len(given[0]) > PARAMETER_LIMIT:
            raise BadParameters(f"{name} must be 1 to {PARAMETER_LIMIT} characters")
        values.append(given[0])
    return values


def _plain(text: str, *, status: int, **headers: str) -> web.Response:
    return web.Response(status=status, text=text, headers={**_HEADERS, **headers})


def _xml(body: str) -> web.Response:
    document = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
    return web.Response(text=document, content_type="text/xml", charset="utf-8", headers=_HEADERS)


def _metadata() -> str:
    return f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"


def confirmed_xml(subscription: SnsSubscription) -> str:
    """Amazon's answer to ConfirmSubscription."""
    return (
        f'<ConfirmSubscriptionResponse xmlns="{XMLNS}"><ConfirmSubscriptionResult>'
        f"<SubscriptionArn>{escape(subscription.arn)}</SubscriptionArn>"
        f"</ConfirmSubscriptionResult>{_metadata()}</ConfirmSubscriptionResponse>"
    )


def unsubscribed_xml() -> str:
    """Amazon's answer to Unsubscribe."""
    return f'<UnsubscribeResponse xmlns="{XMLNS}">{_metadata()}</UnsubscribeResponse>'


class SnsViews:
    """The /sns/ routes' handlers, on the subscriptions passed in, serving `certificate`
    (PEM) at its SigningCertURL (`certificate_path`)."""

    def __init__(
        self,
        *,
        subscriptions: SnsSubscriptions,
        certificate: bytes,
        topics: Collection[str] | None = None,
    ) -> None:
        self._subscriptions = subscriptions
        self._certificate = certificate
        self._topics = None if topics is None else frozenset(topics)
        """The configured topics' ARNs (None: any)."""
        self._refused = LogEvery(REFUSED_LOG_INTERVAL)
        self.certificate_path = CERTIFICATE_PATH.format(fingerprint=fingerprint(certificate))

    def _ours(self, arn: str) -> bool:
        """Whether `arn` could be one of our subscriptions: a topic's ARN and a UUID."""
        topic, _, suffix = arn.rpartition(":")
        try:
            if str(uuid.UUID(suffix)) != suffix:
                return False
        except ValueError:
            return False
        return self._topics is None or topic in self._topics

    def _refuse(self, url: str) -> web.Response:
        if (more := self._refused.due()) is not None:
            log.warning(
                "sns: refused %s for no subscription of ours, or a wrong token%s", url, more
            )
        return _plain(NOT_FOUND, status=404)

    async def certificate(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._certificate,
            content_type=CERTIFICATE_TYPE,
            headers={"Cache-Control": f"public, max-age={CERTIFICATE_MAX_AGE}"},
        )

    async def confirm(self, request: web.Request) -> web.Response:
        try:
            arn, token = _parameters(request, "SubscriptionArn", "Token")
        except BadParameters as exc:
            return _plain(f"{exc}\n", status=400)
        if not self._ours(arn):
            return self._refuse("a SubscribeURL")
        try:
            subscription = await self._subscriptions.sns_confirm(arn, token)
        except StoreError as exc:
            return _store_failed("confirm", arn, exc)
        if subscription is None:
            return self._refuse("a SubscribeURL")
        log.info(
            "sns: destination %s's endpoint confirmed its subscription %s",
            subscription.destination,
            arn,
        )
        return _xml(confirmed_xml(subscription))

    async def unsubscribe(self, request: web.Request) -> web.Response:
        try:
            [arn] = _parameters(request, "SubscriptionArn")
        except BadParameters as exc:
            return _plain(f"{exc}\n", status=400)
        if not self._ours(arn):
            return self._refuse("an UnsubscribeURL")
        try:
            subscription = await self._subscriptions.sns_unsubscribe(arn)
        except StoreError as exc:
            return _store_failed("unsubscribe", arn, exc)
        if subscription is None:
            return self._refuse("an UnsubscribeURL")
        log.info(
            "sns: destination %s's endpoint unsubscribed (subscription %s): its events wait"
            " until it subscribes again",
            subscription.destination,
            arn,
        )
        return _xml(unsubscribed_xml())


def _store_failed(action: str, arn: str, exc: StoreError) -> web.Response:
    log.error("sns: cannot %s %s, the store failed: %s", action, arn, exc)
    return _plain(UNAVAILABLE, status=503, **{"Retry-After": str(RETRY_AFTER)})


def sns_views(config: Config, subscriptions: SnsSubscriptions) -> SnsViews | None:
    """The /sns/ routes' handlers when a destination is SNS-compatible (reading
    `sns.certificate`, ConfigError if it cannot be), else None: no /sns/ routes."""
    topics = [d.topic_arn for d in config.destinations.values() if isinstance(d, SnsDestination)]
    if not topics:
        return None
    return SnsViews(
        subscriptions=subscriptions,
        certificate=load_certificate(config.sns.certificate),
        topics=topics,
    )


def add_sns(app: web.Application, views: SnsViews) -> None:
    """Serve /sns/ with `views`: the certificate at its one path (another fingerprint is
    404), and the SubscribeURL and UnsubscribeURL for GET only: SNS's endpoints visit
    them with GET, and a HEAD (a link checker's) should change nothing."""
    app.router.add_get(views.certificate_path, views.certificate)
    app.router.add_get(CONFIRM_PATH, views.confirm, allow_head=False)
    app.router.add_get(UNSUBSCRIBE_PATH, views.unsubscribe, allow_head=False)
