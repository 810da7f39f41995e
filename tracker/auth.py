"""Who may read statistics: a client presenting `tracker.api_token` as a bearer token,
or a browser holding the dashboard's session cookie.

The cookie never carries the token itself: it is an expiry time and an HMAC of it
keyed by the token, so that changing the token ends every session. Every comparison is
made in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

COOKIE = "pixelpost_session"
REFUSALS_LOGGED_EVERY = 10.0
SESSION_SECONDS = 12 * 3600
WRONG_TOKEN_DELAY = 0.5
"""Seconds before answering a wrong token, to slow guessing down (a long random token
is what protects; see `pixelpost.keys.API_TOKEN_MIN_LENGTH`)."""
_CONTEXT = b"pixelpost dashboard session v1\x00"


class Access:
    """Checks requests against the API token (None: the API and dashboard are off)."""

    def __init__(self, token: str | None, *, clock: Callable[[], float] = time.time) -> None:
        self._token = token.encode() if token else None
        self._clock = clock
        self._refusals = 0
        self._refusal_logged = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def token_matches(self, candidate: str) -> bool:
        """Whether `candidate` is the API token."""
        if self._token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def _mac(self, expires: int) -> str:
        assert self._token is not None
        return hmac.new(self._token, _CONTEXT + str(expires).encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A session cookie value, good for `SESSION_SECONDS`."""
        expires = int(self._clock()) + SESSION_SECONDS
        return f"{expires}.{self._mac(expires)}"

    def session_valid(self, value: str) -> bool:
        if self._token is None:
            return False
        expires_text, _, mac = value.partition(".")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
            return False
        expires = int(expires_text)
        expected = self._mac(expires).encode()
        # Bytes: a cookie may hold any text, and comparing str needs ASCII.
        given = mac.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, expected) and expires > self._clock()

    def refused(self, request: web.Request, what: str) -> None:
        """Log a wrong token, at most once per `REFUSALS_LOGGED_EVERY` seconds (anyone
        can send one) with how many there were."""
        self._refusals += 1
        now = self._clock()
        if now - self._refusal_logged >= REFUSALS_LOGGED_EVERY:
            log.warning(
                "%s: a wrong token from %s (%d since the last such line)",
                what,
                request.remote,
                self._refusals,
            )
            self._refusal_logged = now
            self._refusals = 0

    def allows(self, request: web.Request) -> bool:
        """Whether the request carries the bearer token or a valid session cookie."""
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return self.token_matches(credentials.strip())
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self.session_valid(cookie)
