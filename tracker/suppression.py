"""The suppression list's API, beside the statistics API and behind the same token
(`tracker.api.refusal`):

    GET     /api/v1/suppression/{address}   the entry, or 404
    PUT     /api/v1/suppression/{address}   put it on the list (body, optional:
                                            {"reason": "BOUNCE"}; MANUAL without one)
    DELETE  /api/v1/suppression/{address}   take it off: 204, or 404 if it was not on it
    GET     /api/v1/suppression             a page in address order: after (the cursor,
                                            the last page's `next`), limit, reason

Each takes `config_set=NAME` for the list of that set's unsubscribes
(`unsubscribe_scope = "config_set"`); without it, the account's list, which stops all
mail.

An entry is SES's SuppressedDestination, in the camelCase of SES's events:
`{"emailAddress", "reason", "lastUpdateTime", "messageId"}`. Addresses compare without
regard to case. A bad address, reason or parameter gets 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from pixelpost.core.addresses import ADDRESS_LIMIT
from pixelpost.core.suppression import (
    REASONS,
    BadEntry,
    Reason,
    Suppressed,
    normalize,
    reason,
    suppressed_json,
)
from pixelpost.core.values import parse_count
from pixelpost.logs import fields
from pixelpost.store import StoreError, SuppressionList
from tracker.api import API_HEADERS, api_error, refusal
from tracker.auth import Access

log = logging.getLogger(__name__)

BODY_LIMIT = 4096
"""Bytes of a PUT's body: `{"reason": "UNSUBSCRIBE"}`, with room to spare."""
BODY_TIMEOUT = 10.0
"""Seconds a client has to send a PUT's body (a slow body holds a connection)."""
PAGE_DEFAULT = 100
PAGE_MAX = 1000
"""Entries in one page of the list, as SES's ListSuppressedDestinations."""
PAGE_PARAMETERS = ("after", "limit", "reason", "config_set")
_SET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ADDRESS_SHOWN = 80
"""Characters of a long address (or cursor, or field) quoted back in an error."""
_REASON_LIMIT = 32
"""Characters of a reason read at all (the longest is UNSUBSCRIBE)."""


def _address(text: str) -> str:
    """The address of a URL, as the list keys it; BadEntry naming what is wrong."""
    if len(text) > 2 * ADDRESS_LIMIT:  # not quoted back whole: the error stays short
        raise BadEntry(f"address {text[:_ADDRESS_SHOWN]!r}…: address too long")
    try:
        return normalize(text)
    except BadEntry as exc:
        raise BadEntry(f"address {exc}") from None


def _reason(given: object) -> Reason:
    """A reason as the API was given it (any case); BadEntry naming what is wrong."""
    if isinstance(given, str) and len(given) <= _REASON_LIMIT:
        try:
            return reason(given)
        except BadEntry as exc:
            raise BadEntry(f"reason: {exc}") from None
    shown = json.dumps(given)[:_ADDRESS_SHOWN]
    raise BadEntry(f"reason: {shown} is not one of {REASONS}")


def put_reason(body: bytes) -> Reason:
    """The reason a PUT's body gives (MANUAL when it is empty); BadEntry naming what is
    wrong with it."""
    if not body.strip():
        return Reason.MANUAL
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise BadEntry(
            'body: not JSON (send {"reason": "BOUNCE"}, or no body for MANUAL)'
        ) from None
    if not isinstance(data, dict):
        raise BadEntry('body: a JSON object is expected, such as {"reason": "BOUNCE"}')
    for name in data:
        if name != "reason":
            raise BadEntry(
                f"body: unknown field {name[:_ADDRESS_SHOWN]!r} (the one field is reason)"
            )
    return _reason(data.get("reason", Reason.MANUAL.value))


async def _read_body(request: web.Request) -> bytes | web.Response:
    """The request's body; or the answer to one past `BODY_LIMIT` bytes, or slower than
    `BODY_TIMEOUT`."""
    too_large = api_error(413, f"the body is larger than {BODY_LIMIT} bytes")
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        return too_large
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.read(BODY_LIMIT + 1 - len(body)):
                body += chunk
                if len(body) > BODY_LIMIT:
                    return too_large
    except TimeoutError:
        log.warning(
            "%s: a suppression list PUT's body came too slowly",
            request.remote,
            extra=fields(peer=request.remote),
        )
        return api_error(408, f"the body did not come within {BODY_TIMEOUT:g} seconds")
    return bytes(body)


def scope_query(params: Mapping[str, str]) -> str | None:
    """The list that `config_set` names (None: the account's); BadEntry if it is no
    configuration set's name."""
    name = params.get("config_set")
    if name is None:
        return None
    if not _SET_NAME.fullmatch(name):
        raise BadEntry(f"config_set: {name[:64]!r} is not a configuration set's name")
    return name


def page_query(params: Mapping[str, str]) -> tuple[str, int, Reason | None]:
    """(after, limit, reason) from a page's query parameters; BadEntry naming the first
    that is wrong."""
    for name in params:
        if name not in PAGE_PARAMETERS:
            raise BadEntry(f"{name[:64]}: unknown parameter (known: {', '.join(PAGE_PARAMETERS)})")
    # The cursor is the last address of a page, lowercase as the list keys it.
    after = params.get("after", "").lower()
    if len(after) > 2 * ADDRESS_LIMIT:
        raise BadEntry(f"after: {after[:_ADDRESS_SHOWN]!r}… is not an address")
    limit_text = params.get("limit") or str(PAGE_DEFAULT)
    try:
        limit = parse_count(limit_text, low=1, high=PAGE_MAX)
    except ValueError:
        raise BadEntry(
            f"limit: {limit_text[:20]!r} is not a number from 1 to {PAGE_MAX}"
        ) from None
    why = _reason(params["reason"]) if params.get("reason") else None
    return after, limit, why


class SuppressionViews:
    """The API's handlers, on the suppression list and the access check passed in."""

    def __init__(
        self,
        *,
        access: Access,
        suppression: SuppressionList,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._access = access
        self._list = suppression
        self._clock = clock

    async def _address(self, request: web.Request) -> tuple[str, str | None] | web.Response:
        """The request's address and scope, or the answer to a request without access
        or with an address or scope that does not read (the token is checked first)."""
        if (refused := await refusal(self._access, request)) is not None:
            return refused
        try:
            return _address(request.match_info["address"]), scope_query(request.query)
        except BadEntry as exc:
            return api_error(400, str(exc))

    async def entry(self, request: web.Request) -> web.Response:
        read = await self._address(request)
        if isinstance(read, web.Response):
            return read
        address, config_set = read
        try:
            found = await self._list.suppression(address, config_set)
        except StoreError as exc:
            return _unavailable(exc)
        if found is None:
            return _not_listed(address)
        return web.json_response(suppressed_json(found), headers=API_HEADERS)

    async def put(self, request: web.Request) -> web.Response:
        if (refused := await refusal(self._access, request)) is not None:
            return refused
        body = await _read_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            address = _address(request.match_info["address"])
            config_set = scope_query(request.query)
            why = put_reason(body)
        except BadEntry as exc:
            return api_error(400, str(exc))
        entry = Suppressed(
            address=address,
            reason=why,
            created_at=datetime.fromtimestamp(self._clock(), UTC),
            config_set=config_set,
        )
        try:
            await self._list.suppress([entry])
        except StoreError as exc:
            return _unavailable(exc)
        client = self._access.client(request)
        log.info(
            "%s: put %s on the suppression list (%s)",
            client,
            address,
            why.value,
            extra=fields(peer=client),
        )
        return web.json_response(suppressed_json(entry), headers=API_HEADERS)

    async def delete(self, request: web.Request) -> web.Response:
        read = await self._address(request)
        if isinstance(read, web.Response):
            return read
        address, config_set = read
        try:
            removed = await self._list.unsuppress(address, config_set)
        except StoreError as exc:
            return _unavailable(exc)
        if not removed:
            return _not_listed(address)
        client = self._access.client(request)
        log.info(
            "%s: took %s off the suppression list", client, address, extra=fields(peer=client)
        )
        return web.Response(status=204, headers=API_HEADERS)

    async def page(self, request: web.Request) -> web.Response:
        if (refused := await refusal(self._access, request)) is not None:
            return refused
        try:
            after, limit, why = page_query(request.query)
            config_set = scope_query(request.query)
        except BadEntry as exc:
            return api_error(400, str(exc))
        try:
            # One more than asked: whether there is a next page at all.
            entries = await self._list.suppression_list(
                after=after, limit=limit + 1, reason=why, config_set=config_set
            )
        except StoreError as exc:
            return _unavailable(exc)
        more = len(entries) > limit
        entries = entries[:limit]
        return web.json_response(
            {
                "suppressedDestinations": [suppressed_json(entry) for entry in entries],
                "next": entries[-1].address if more else None,
            },
            headers=API_HEADERS,
        )


def _not_listed(address: str) -> web.Response:
    return api_error(404, f"{address} is not on the suppression list")


def _unavailable(exc: StoreError) -> web.Response:
    log.error("api: cannot use the suppression list: %s", exc)
    return api_error(503, "the suppression list cannot be used now; try again")


def add_suppression_api(
    app: web.Application,
    *,
    access: Access,
    suppression: SuppressionList,
    clock: Callable[[], float] = time.time,
) -> None:
    """Serve `/api/v1/suppression` from `suppression`."""
    views = SuppressionViews(access=access, suppression=suppression, clock=clock)
    app.router.add_get("/api/v1/suppression", views.page)
    app.router.add_get("/api/v1/suppression/{address}", views.entry)
    app.router.add_put("/api/v1/suppression/{address}", views.put)
    app.router.add_delete("/api/v1/suppression/{address}", views.delete)
