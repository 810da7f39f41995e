"""Unsubscribing at /u/<token>: RFC 8058's one-click POST, and a page with a button.

    GET|HEAD /u/<token>   a page asking whether to unsubscribe (or, once unsubscribed,
                          saying so and offering to subscribe again); it never changes
                          anything, since link scanners follow every link in a message
    POST     /u/<token>   `List-Unsubscribe=One-Click`, as mailbox providers send it:
                          unsubscribed at once (source UnsubscribeHeader), 200
                          `action=unsubscribe` or `action=resubscribe`, the page's
                          buttons (source UnsubscribeLink): done, and a page saying so

The token names the copy, its recipient, its set and the scope (`pixelpost.core.tokens`);
one that does not verify gets the click route's 404. A change is committed, with its
Subscription event, before the answer: the store failing it gets 503 and Retry-After,
never 200. The store makes a change once, so a replayed POST makes one event.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import enum
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiohttp import web

from pixelpost.core.events import SubscriptionSource
from pixelpost.core.subscription import Subscriber, resubscribed, unsubscribed
from pixelpost.core.suppression import BadEntry, Reason, Suppressed, normalize
from pixelpost.core.tokens import InvalidToken, TokenCodec
from pixelpost.logs import fields
from pixelpost.store import StoreError, SuppressionList
from tracker.metrics import Metrics
from tracker.pages import Pages
from tracker.views import NOT_FOUND

log = logging.getLogger(__name__)

BODY_LIMIT = 4096
"""Bytes of a POST's body: `List-Unsubscribe=One-Click` is 26, a form's a few more."""
BODY_TIMEOUT = 10.0
"""Seconds a client has to send a POST's body."""
RETRY_AFTER = 30
"""Seconds a client is asked to wait when the store cannot take a change."""
FIELDS_LIMIT = 20
"""Fields of a form read at most."""
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}
"""On every answer: the page is the recipient's own, for no cache, index or frame."""
ONE_CLICK_DONE = "You are unsubscribed.\n"
ONE_CLICK_UNAVAILABLE = "The unsubscribe could not be recorded just now; try again.\n"
_METHODS = ("GET", "HEAD", "POST")
_SHOWN = 40
"""Characters of a client's field name or value quoted back in an error."""


class Ask(enum.Enum):
    """What a POST asks for."""

    ONE_CLICK = "List-Unsubscribe=One-Click"
    UNSUBSCRIBE = "action=unsubscribe"
    RESUBSCRIBE = "action=resubscribe"


class BadForm(ValueError):
    """A POST's body is not one of the forms /u/ takes; the message says why."""


class UnsupportedType(BadForm):
    """A POST's body is not a form at all."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("ascii")
        return parse_qsl(
            text, keep_blank_values=True, errors="strict", max_num_fields=FIELDS_LIMIT
        )
    except UnicodeDecodeError:
        raise BadForm("the form is not percent-encoded UTF-8") from None
    except ValueError:
        raise BadForm(f"the form has more than {FIELDS_LIMIT} fields") from None


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str]]:
    head = b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.get_param("boundary"):
        raise BadForm("multipart/form-data without a boundary")
    found: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            raise BadForm("a part of the form has no name, or is itself multipart")
        try:
            found.append((name, payload.decode("utf-8")))
        except UnicodeDecodeError:
            raise BadForm(f"the form's field {_shown(name)} is not UTF-8") from None
        if len(found) > FIELDS_LIMIT:
            raise BadForm(f"the form has more than {FIELDS_LIMIT} fields")
    return found


def read_form(content_type: str | None, body: bytes) -> Ask:
    """What a POST's body asks for; BadForm (UnsupportedType for a body that is no form)
    naming what is wrong. Fields other than those /u/ knows are left alone."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", ""):
        form = _urlencoded(body)
    elif kind == "multipart/form-data":
        form = _multipart(content_type or "", body)
    else:
        raise UnsupportedType(
            f"Content-Type {_shown(kind)}: send application/x-www-form-urlencoded"
            " or multipart/form-data"
        )
    asked: set[Ask] = set()
    for name, value in form:
        if name.lower() == "list-unsubscribe":
            if value.strip().lower() != "one-click":
                raise BadForm(f"List-Unsubscribe is {_shown(value)}, not One-Click")
            asked.add(Ask.ONE_CLICK)
        elif name == "action":
            if value not in ("unsubscribe", "resubscribe"):
                raise BadForm(f"action is {_shown(value)}, not unsubscribe or resubscribe")
            asked.add(Ask(f"action={value}"))
    if not asked:
        raise BadForm(
            "the body has neither List-Unsubscribe=One-Click (RFC 8058) nor"
            " action=unsubscribe or action=resubscribe"
        )
    if len(asked) > 1:
        raise BadForm(f"the body asks for {' and '.join(sorted(a.value for a in asked))}")
    return asked.pop()


class _RefusedBody(Exception):
    """A POST's body refused before it is read whole, with the status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def _read_body(request: web.Request) -> bytes:
    """The request's body; _RefusedBody for one past `BODY_LIMIT` bytes, or
    slower than `BODY_TIMEOUT`."""
    too_large = _RefusedBody(413, f"the body is larger than {BODY_LIMIT} bytes")
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.read(BODY_LIMIT + 1 - len(body)):
                body += chunk
                if len(body) > BODY_LIMIT:
                    raise too_large
    except TimeoutError:
        raise _RefusedBody(408, f"the body did not come within {BODY_TIMEOUT:g} seconds") from None
    return bytes(body)


async def _asked(request: web.Request) -> Ask | web.Response:
    """What a POST asks for, or the answer to a body that is too large, too slow, or
    none of the forms /u/ takes."""
    try:
        body = await _read_body(request)
        return read_form(request.headers.get("Content-Type"), body)
    except _RefusedBody as refused:
        return _plain(f"{refused}\n", status=refused.status)
    except UnsupportedType as exc:
        return _plain(f"{exc}\n", status=415)
    except BadForm as exc:
        return _plain(f"{exc}\n", status=400)


def _plain(text: str, *, status: int = 200, **headers: str) -> web.Response:
    return web.Response(status=status, text=text, headers={**HEADERS, **headers})


class UnsubscribeViews:
    """The /u/ route's handler, on the suppression list passed in."""

    def __init__(
        self,
        *,
        codec: TokenCodec,
        subscriptions: SuppressionList,
        pages: Pages,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._codec = codec
        self._list = subscriptions
        self._pages = pages
        self._metrics = metrics
        self._clock = clock
        self._latency = metrics.latency.labels("unsubscribe")

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            return await self._answer(request)
        finally:
            self._latency.observe(time.perf_counter() - started)

    async def _answer(self, request: web.Request) -> web.Response:
        if request.method not in _METHODS:
            return _plain("Method not allowed.\n", status=405, Allow=", ".join(_METHODS))
        try:
            token = self._codec.read_unsubscribe(request.match_info["token"])
        except InvalidToken:
            self._metrics.invalid_tokens.labels("unsubscribe").inc()
            return _plain(NOT_FOUND, status=404)
        try:
            normalize(token.address)
        except BadEntry as exc:  # signed by pixelpost, for an address the list cannot take
            log.warning(
                "%s: the unsubscribe token's address cannot be listed: %s",
                token.message_id,
                exc,
                extra=fields(message_id=token.message_id),
            )
            return _plain(NOT_FOUND, status=404)
        subscriber = Subscriber(
            message_id=token.message_id,
            address=token.address,
            config_set=token.config_set,
            account=token.account,
        )
        try:
            if request.method == "POST":
                return await self._post(request, subscriber)
            return await self._show(request, subscriber)
        except StoreError as exc:
            _store_failed(subscriber, exc)
            return self._page(request, subscriber, "unavailable.html", status=503)

    def _page(
        self, request: web.Request, subscriber: Subscriber, name: str, *, status: int = 200
    ) -> web.Response:
        page = self._pages.render(
            name,
            accept_language=request.headers.get("Accept-Language"),
            address=subscriber.address,
            config_set=subscriber.config_set,
            account=subscriber.account,
        )
        headers = {**HEADERS, "Vary": "Accept-Language"}
        if page.language is not None:
            headers["Content-Language"] = page.language
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER)
        return web.Response(
            status=status,
            text=page.html,
            content_type="text/html",
            charset="utf-8",
            headers=headers,
        )

    async def _entry(self, subscriber: Subscriber) -> Suppressed | None:
        return await self._list.suppression(subscriber.key, subscriber.scope)

    async def _show(self, request: web.Request, subscriber: Subscriber) -> web.Response:
        entry = await self._entry(subscriber)
        name = "unsubscribe.html" if entry is None else _listed_page(entry)
        return self._page(request, subscriber, name)

    async def _post(self, request: web.Request, subscriber: Subscriber) -> web.Response:
        ask = await _asked(request)
        if isinstance(ask, web.Response):
            return ask
        if ask is Ask.RESUBSCRIBE:
            return await self._resubscribe(request, subscriber)
        source = SubscriptionSource.HEADER if ask is Ask.ONE_CLICK else SubscriptionSource.LINK
        counted = self._metrics.unsubscribes
        try:
            listed, changed = await self._unsubscribe(subscriber, source)
        except StoreError as exc:
            counted.labels(source.value, "failed").inc()
            if ask is not Ask.ONE_CLICK:
                raise
            _store_failed(subscriber, exc)
            return _plain(ONE_CLICK_UNAVAILABLE, status=503, **{"Retry-After": str(RETRY_AFTER)})
        counted.labels(source.value, "unsubscribed" if changed else "already").inc()
        if changed:
            self._changed(subscriber, "unsubscribed", source)
        if ask is Ask.ONE_CLICK:
            return _plain(ONE_CLICK_DONE)
        name = "unsubscribed.html" if listed is None else _listed_page(listed)
        return self._page(request, subscriber, name)

    async def _unsubscribe(
        self, subscriber: Subscriber, source: SubscriptionSource
    ) -> tuple[Suppressed | None, bool]:
        """Unsubscribe, unless the list has the address in that scope already: its entry
        then (None once made here), and whether this made it. A replay (a provider's
        retry, the button pressed twice) is answered from a read, without a write."""
        listed = await self._entry(subscriber)
        if listed is not None:
            return listed, False
        entry, event = unsubscribed(subscriber, source=source, now=self._now())
        if await self._list.unsubscribe(entry, event):
            return None, True
        return await self._entry(subscriber), False  # made meanwhile, by another request

    async def _resubscribe(self, request: web.Request, subscriber: Subscriber) -> web.Response:
        source = SubscriptionSource.LINK
        event = resubscribed(subscriber, source=source, now=self._now())
        counted = self._metrics.resubscribes
        try:
            changed = await self._list.resubscribe(subscriber.key, subscriber.scope, event)
        except StoreError:
            counted.labels("failed").inc()
            raise
        counted.labels("resubscribed" if changed else "unchanged").inc()
        if changed:
            self._changed(subscriber, "subscribed again", source)
            return self._page(request, subscriber, "resubscribed.html")
        # Not unsubscribed in that scope: subscribed already, or on the list for another
        # reason (a bounce, say), which only the sender can take it off for.
        entry = await self._entry(subscriber)
        name = "resubscribed.html" if entry is None else _listed_page(entry)
        return self._page(request, subscriber, name)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @staticmethod
    def _changed(subscriber: Subscriber, what: str, source: SubscriptionSource) -> None:
        scope = "all mail" if subscriber.account else f"config set {subscriber.config_set}"
        extra = fields(message_id=subscriber.message_id)
        # The address is personal data: at INFO the copy's id says whose it was.
        log.info("%s: %s (%s, %s)", subscriber.message_id, what, scope, source.value, extra=extra)
        log.debug("%s: %s is %s", subscriber.message_id, subscriber.address, what, extra=extra)


def _listed_page(entry: Suppressed) -> str:
    """The page for a recipient on the list in the link's scope: unsubscribed, or kept
    off it for another reason (a bounce, say) that only the sender can undo."""
    return "unsubscribed.html" if entry.reason is Reason.UNSUBSCRIBE else "suppressed.html"


def _store_failed(subscriber: Subscriber, exc: StoreError) -> None:
    log.error(
        "%s: /u/ answered 503, the store failed: %s",
        subscriber.message_id,
        exc,
        extra=fields(message_id=subscriber.message_id),
    )


def add_unsubscribe(app: web.Application, views: UnsubscribeViews) -> None:
    """Serve /u/<token> with `views` (every method: a refused one gets 405 with the
    same headers as every other answer)."""
    app.router.add_route("*", "/u/{token}", views.handle)
