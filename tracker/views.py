"""The tracker's hot paths: the pixel and the click redirect.

Each hit is normally recorded durably before the answer goes out (the store groups
concurrent hits into one commit), so an open or click that got its answer is not lost
even if the tracker dies right after. A store slower than a few tens of milliseconds
does not hold the answer up: the hit is then kept in memory until the store takes it
(`pixelpost.store.buffer`). A token that does not verify gets 404 and a short plain
page, never a redirect.

Each hit is classified (`pixelpost.core.classify`) before it is stored: a machine's open or
a bot's click is marked so, with its reason. The client's full address is only used
for that; with `anonymize_ip` the stored one is cut to its /24 or /48.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from aiohttp import web

from pixelpost.config import ClassifyConfig, IPNetwork
from pixelpost.core.classify import Classifier, Facts, Kind, RecentClicks
from pixelpost.core.event_types import EventType
from pixelpost.core.events import dumps
from pixelpost.core.tokens import InvalidToken, TokenCodec
from pixelpost.logs import fields
from pixelpost.store import Hit, HitRecorder, StoreError
from tracker.classifier import classifier_for
from tracker.client import anonymize, client_ip
from tracker.metrics import Metrics

log = logging.getLogger(__name__)

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""A transparent 1x1 GIF, 43 bytes."""
NOT_FOUND = "This link is not valid.\n"
USER_AGENT_LIMIT = 512
DELIVERY_TIMES_CACHED = 50_000
DELIVERY_LOOKUP_TIMEOUT = 0.05
"""Seconds a click waits at most for its copy's delivery time."""
UNDELIVERED_CACHED_SECONDS = 1.0
"""How long a copy not known to be delivered yet is taken to be so, between lookups."""
_NO_STORE = {"Cache-Control": "no-store"}
_HEADER_UNSAFE = re.compile(r"[^\x21-\x7e]")


def location(url: str) -> str:
    """`url` as a Location header value: an international host in its xn-- form, and
    characters a header cannot carry percent-encoded (UTF-8), the rest as written."""
    if url.isascii() and _HEADER_UNSAFE.search(url) is None:
        return url  # the common case: nothing to change
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = parts.netloc
    if not host.isascii():
        netloc = netloc.replace(host, host.encode("idna").decode("ascii"))
    rebuilt = urlunsplit(parts._replace(netloc=netloc)) if netloc != parts.netloc else url
    return _HEADER_UNSAFE.sub(lambda m: quote(m.group(), safe=""), rebuilt)


class Views:
    """The pixel and click handlers, with what they need passed in."""

    def __init__(
        self,
        *,
        codec: TokenCodec,
        recorder: HitRecorder,
        trusted_proxies: Sequence[IPNetwork],
        anonymize_ip: bool,
        metrics: Metrics,
        classifier: Classifier | None = None,
        delivered_at: Callable[[str], Awaitable[tuple[float, bool] | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._codec = codec
        self._classifier = classifier or classifier_for(ClassifyConfig())
        self._delivered_at = delivered_at
        self._delivery_times: OrderedDict[str, tuple[float | None, float]] = OrderedDict()
        """Per copy: (delivered or accepted at, cached until)."""
        self._recent_clicks = RecentClicks()
        self._recorder = recorder
        self._trusted = tuple(trusted_proxies)
        self._anonymize = anonymize_ip
        self._metrics = metrics
        self._clock = clock
        self._opens = metrics.opens
        self._clicks = metrics.clicks
        self._pixel_latency = metrics.latency.labels("pixel")
        self._click_latency = metrics.latency.labels("click")

    def _who(self, request: web.Request) -> tuple[str, str]:
        """The client's full address and its user agent."""
        headers = request.headers
        forwarded = headers.get("X-Forwarded-For")
        peer = request.remote
        if forwarded is None and peer is not None and not peer.startswith("::ffff:"):
            ip = peer  # the common case needs no parsing
        else:
            ip = client_ip(peer, forwarded, self._trusted)
        return ip, headers.get("User-Agent", "")[:USER_AGENT_LIMIT]

    async def _since_delivery(self, message_id: str, now: float) -> float | None:
        """Seconds since the copy was delivered (or accepted), for the rules that ask.
        A lookup that fails or takes too long leaves it unknown: the answer to the
        recipient never waits long on it, and never fails for it."""
        cached = self._delivery_times.get(message_id)
        if cached is not None and cached[1] > now:
            self._delivery_times.move_to_end(message_id)
            at = cached[0]
            return None if at is None else now - at
        if self._delivered_at is None:
            return None
        try:
            async with asyncio.timeout(DELIVERY_LOOKUP_TIMEOUT):
                found = await self._delivered_at(message_id)
        except Exception as exc:  # whatever it is, classification must not break a hit
            log.warning(
                "%s: delivery time unknown: %s",
                message_id,
                exc or type(exc).__name__,
                extra=fields(message_id=message_id),
            )
            found = None  # and not asked again at once: a store in trouble gets no queue
        at, delivered = found if found is not None else (None, False)
        # A delivery time is for good; an acceptance time (or no record) may still
        # become one, so it is asked again a little later.
        self._delivery_times[message_id] = (
            at,
            float("inf") if delivered else now + UNDELIVERED_CACHED_SECONDS,
        )
        self._delivery_times.move_to_end(message_id)
        if len(self._delivery_times) > DELIVERY_TIMES_CACHED:
            self._delivery_times.popitem(last=False)
        return None if at is None else now - at

    def _unrecorded(self, hit: Hit, error: StoreError) -> None:
        # The recipient still gets the image or the page: a tracker that breaks links
        # when its store is down would be worse than a lost count.
        self._metrics.unrecorded.inc()
        log.error(
            "%s: %s not recorded: %s",
            hit.message_id,
            hit.kind.value,
            error,
            extra=fields(message_id=hit.message_id),
        )

    def _refused(self, route: str, started: float) -> web.Response:
        """The answer to a forged, damaged or unknown-key token: never a redirect."""
        self._metrics.invalid_tokens.labels(route).inc()
        self._metrics.latency.labels(route).observe(time.perf_counter() - started)
        return web.Response(status=404, text=NOT_FOUND, headers=_NO_STORE)

    async def _record(
        self,
        request: web.Request,
        kind: Kind,
        message_id: str,
        *,
        link: str | None = None,
        link_tags: str | None = None,
    ) -> None:
        """Classify the open or click and record it; a store that fails it costs the
        count, never the recipient's answer."""
        ip, user_agent = self._who(request)
        now = self._clock()
        classifier = self._classifier
        since_delivery = (
            await self._since_delivery(message_id, now)
            if classifier.needs_delivery(kind)
            else None
        )
        since_other_link = (
            self._recent_clicks.since_other_link(message_id, ip, link, now)
            if link is not None and classifier.needs_burst
            else None
        )
        verdict = classifier.classify(
            Facts(
                kind,
                request.method,
                user_agent,
                ip,
                since_delivery=since_delivery,
                since_other_link=since_other_link,
            )
        )
        hit = Hit(
            kind=EventType.OPEN if kind == "open" else EventType.CLICK,
            message_id=message_id,
            ip=anonymize(ip) if self._anonymize else ip,
            user_agent=user_agent,
            at=now,
            link=link,
            link_tags=link_tags,
            machine=verdict.machine,
            reason=verdict.reason,
            proxy=verdict.proxy if kind == "open" else None,
        )
        try:
            await self._recorder.record_hits((hit,))
        except StoreError as exc:
            self._unrecorded(hit, exc)

    async def pixel(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            token = self._codec.read_open(request.match_info["token"])
        except InvalidToken:
            return self._refused("pixel", started)
        await self._record(request, "open", token.message_id)
        self._opens.inc()
        self._pixel_latency.observe(time.perf_counter() - started)
        return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_STORE)

    async def click(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        # The raw path, as sent: the destination in it is percent-encoded exactly as
        # signed, and a query string added on the way is not part of the token.
        path = request.raw_path.split("?", 1)[0].removeprefix("/c/")
        try:
            token = self._codec.read_click(path)
        except InvalidToken:
            return self._refused("click", started)
        tags = (
            dumps({name: list(values) for name, values in token.tags.items()})
            if token.tags
            else "{}"
        )
        await self._record(request, "click", token.message_id, link=token.url, link_tags=tags)
        self._clicks.inc()
        self._click_latency.observe(time.perf_counter() - started)
        return web.Response(status=302, headers={"Location": location(token.url), **_NO_STORE})
