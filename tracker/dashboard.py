"""The statistics dashboard: a login form, the page and its few static files.

The page is static HTML; `dashboard.js` reads `/api/v1/stats` with the session cookie
set here and draws everything in the browser. Every file is served by the tracker from
the package (no CDN), under a Content-Security-Policy that allows nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qs

from aiohttp import web

from pixelpost.config import IPNetwork
from pixelpost.logs import fields
from tracker.auth import COOKIE, SESSION_SECONDS, Access, Outcome, Verdict
from tracker.client import is_trusted

log = logging.getLogger(__name__)

LOGIN_BODY_LIMIT = 4096
"""Bytes of a login form: a token, with room to spare."""
LOGIN_BODY_TIMEOUT = 10.0
"""Seconds a client has to send the login form (a slow body holds a connection)."""
OFF = "The dashboard is off until tracker.api_token is set.\n"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

ASSET_TYPES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
"""The files under /dashboard/static/, and nothing else from the folder."""

_LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · pixelpost</title>
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head>
<body class="login">
<main class="login-box">
<h1>pixelpost</h1>
<p class="muted">Enter the tracker's API token to see the statistics.</p>
{error}<form method="post" action="/dashboard/login">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(name: str, content_type: str) -> Asset:
    body = (resources.files(__package__) / "static" / name).read_bytes()
    return Asset(
        body=body,
        content_type=content_type,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


def login_page(error: str | None = None) -> str:
    """The login form, with `error` above it."""
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    return _LOGIN_PAGE.format(error=shown)


def came_over_https(request: web.Request, trusted_proxies: Sequence[IPNetwork]) -> bool:
    """Whether the browser used https, directly or through a trusted proxy that says so
    (anyone else's X-Forwarded-Proto is a claim about itself, not a fact)."""
    if request.secure:
        return True
    if not is_trusted(request.remote, trusted_proxies):
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",", 1)[0].strip().lower() == "https"


def _page(text: str, *, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=text, content_type="text/html", charset="utf-8", headers=_NO_STORE
    )


def _plain(text: str, *, status: int) -> web.Response:
    return web.Response(status=status, text=text, headers=_NO_STORE)


def _too_many(verdict: Verdict) -> web.Response:
    text = f"Too many wrong tokens: try again in {verdict.retry_after} seconds."
    return web.Response(
        status=429,
        text=login_page(text),
        content_type="text/html",
        charset="utf-8",
        headers={**_NO_STORE, "Retry-After": str(verdict.retry_after)},
    )


def _cross_site(request: web.Request) -> bool:
    # A form another site made the browser post: refused, so that no page can sign a
    # user out (or in). Browsers too old to send Sec-Fetch-Site are let through; the
    # SameSite=Strict cookie keeps such requests from using a session anyway.
    return request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"


async def _read_form(request: web.Request, limit: int) -> dict[str, list[str]] | web.Response:
    """The urlencoded form in the request's body; or the answer to a body past `limit`
    bytes, or slower than `LOGIN_BODY_TIMEOUT`."""
    too_large = _plain("The form is too large.\n", status=413)
    if request.content_length is not None and request.content_length > limit:
        return too_large
    body = bytearray()
    try:
        async with asyncio.timeout(LOGIN_BODY_TIMEOUT):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    return too_large
    except TimeoutError:
        log.warning(
            "%s: the dashboard's sign-in form came too slowly",
            request.remote,
            extra=fields(peer=request.remote),
        )
        return _plain("The form came too slowly.\n", status=408)
    try:
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=16)
    except ValueError:  # more fields than any login form has: no token in it
        return {}


class Dashboard:
    """The dashboard's handlers, with the access check passed in."""

    def __init__(self, *, access: Access) -> None:
        self._access = access
        self._page = _asset("dashboard.html", "text/html").body.decode()
        self._assets = {name: _asset(name, kind) for name, kind in ASSET_TYPES.items()}

    async def page(self, request: web.Request) -> web.Response:
        if not self._access.enabled:
            return _plain(OFF, status=404)
        verdict = await self._access.admit(request, "dashboard")
        if verdict.outcome is Outcome.ALLOWED:
            return _page(self._page)
        if verdict.outcome is Outcome.THROTTLED:
            return _too_many(verdict)
        if verdict.outcome is Outcome.WRONG:
            return _page(login_page("wrong token"), status=401)
        return _page(login_page())

    async def login(self, request: web.Request) -> web.Response:
        if not self._access.enabled:
            return _plain(OFF, status=404)
        if _cross_site(request):
            return _plain("Cross-site sign-in refused.\n", status=403)
        form = await _read_form(request, LOGIN_BODY_LIMIT)
        if isinstance(form, web.Response):
            return form
        tokens = form.get("token", [])
        verdict = await self._access.check(
            request, tokens[0] if len(tokens) == 1 else None, "dashboard sign-in"
        )
        if verdict.outcome is Outcome.THROTTLED:
            return _too_many(verdict)
        if verdict.outcome is not Outcome.ALLOWED:
            return _page(login_page("wrong token"), status=401)
        response = web.Response(status=303, headers={"Location": "/dashboard", **_NO_STORE})
        response.set_cookie(
            COOKIE,
            self._access.new_session(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=came_over_https(request, self._access.trusted_proxies),
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if not self._access.enabled:
            return _plain(OFF, status=404)
        if _cross_site(request):
            return _plain("Cross-site sign-out refused.\n", status=403)
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            self._access.end_session(cookie)
        response = web.Response(status=303, headers={"Location": "/dashboard", **_NO_STORE})
        response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return response

    async def static(self, request: web.Request) -> web.Response:
        if not self._access.enabled:
            return _plain(OFF, status=404)
        asset = self._assets.get(request.match_info["name"])
        if asset is None:
            return _plain("Not found.\n", status=404)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": asset.etag}
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body,
            content_type=asset.content_type,
            charset=None if asset.content_type.startswith("image/") else "utf-8",
            headers=headers,
        )


def add_dashboard(app: web.Application, access: Access) -> None:
    """Serve the dashboard from `app` at /dashboard, for clients `access` allows."""
    dashboard = Dashboard(access=access)
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_post("/dashboard/login", dashboard.login)
    app.router.add_post("/dashboard/logout", dashboard.logout)
    app.router.add_get("/dashboard/static/{name}", dashboard.static)
