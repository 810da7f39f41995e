"""Who may read statistics: a client presenting `tracker.api_token` as a bearer token,
or a browser holding one of the dashboard's sessions.

A session cookie never carries the token: it holds an expiry time and a random session
id, with an HMAC of both keyed by the token (so that changing the token ends every
session). The live sessions are also kept here, so that signing out ends one for good.
They live in this process's memory: a restart signs everyone out, and a second tracker
process would not know the first one's sessions (the bearer token works in any). Every
comparison is made in constant time.

A wrong token is answered after `WRONG_TOKEN_DELAY`, and counted per client address and
in all (`tracker.throttle`): past the limit, attempts are refused (429) unchecked.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from pixelpost.config import IPNetwork
from pixelpost.core.throttle import Throttle
from pixelpost.logs import LogEvery, fields
from tracker.client import client_ip

log = logging.getLogger(__name__)

COOKIE = "pixelpost_session"
REFUSALS_LOGGED_EVERY = 10.0
SESSION_SECONDS = 12 * 3600
SESSIONS_KEPT = 1000
"""Live sessions at most; a sign-in past that ends the oldest one."""
WRONG_TOKEN_DELAY = 0.5
"""Seconds before answering a wrong token, to slow guessing down (a long random token
is what protects; see `pixelpost.keys.API_TOKEN_MIN_LENGTH`)."""
_CONTEXT = b"pixelpost dashboard session v2\x00"
_SESSION_ID_BYTES = 18
_SESSION_ID_MAX = 64


class Outcome(enum.Enum):
    """What a request's credentials came to."""

    ALLOWED = "allowed"
    ANONYMOUS = "anonymous"
    """No token and no valid session: nothing was tried."""
    WRONG = "wrong"
    THROTTLED = "throttled"
    """Refused unchecked: too many wrong tokens lately."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    outcome: Outcome
    retry_after: int = 0
    """Seconds before trying again, when THROTTLED."""


class Access:
    """Checks requests against the API token (None: the API and dashboard are off)."""

    def __init__(
        self,
        token: str | None,
        *,
        trusted_proxies: Sequence[IPNetwork] = (),
        throttle: Throttle | None = None,
        wrong_token_delay: float = WRONG_TOKEN_DELAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token = token.encode() if token else None
        self._trusted = tuple(trusted_proxies)
        self._throttle = throttle or Throttle()
        self._delay = wrong_token_delay
        self._clock = clock
        self._sessions: collections.OrderedDict[str, int] = collections.OrderedDict()
        """Live session ids and when they expire, oldest first."""
        self._wrong_logged = LogEvery(REFUSALS_LOGGED_EVERY)
        self._throttled_logged = LogEvery(REFUSALS_LOGGED_EVERY)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """The proxies whose X-Forwarded-* headers are believed."""
        return self._trusted

    def client(self, request: web.Request) -> str:
        """The client's address, behind the trusted proxies."""
        return client_ip(request.remote, request.headers.get("X-Forwarded-For"), self._trusted)

    def token_matches(self, candidate: str) -> bool:
        """Whether `candidate` is the API token."""
        if self._token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def _mac(self, expires: int, session_id: str) -> str:
        assert self._token is not None
        signed = _CONTEXT + f"{expires}.{session_id}".encode()
        return hmac.new(self._token, signed, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A new session's cookie value, good for `SESSION_SECONDS` or until it ends."""
        now = int(self._clock())
        while self._sessions and next(iter(self._sessions.values())) <= now:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(_SESSION_ID_BYTES)
        expires = now + SESSION_SECONDS
        self._sessions[session_id] = expires
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        return f"{expires}.{session_id}.{self._mac(expires, session_id)}"

    def _session_id(self, value: str) -> str | None:
        """The session id of a cookie value made here and not expired, else None."""
        if self._token is None:
            return None
        expires_text, _, rest = value.partition(".")
        session_id, _, mac = rest.partition(".")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
            return None
        if not session_id.isascii() or len(session_id) > _SESSION_ID_MAX:
            return None
        expires = int(expires_text)
        expected = self._mac(expires, session_id).encode()
        # Bytes: a cookie may hold any text, and comparing str needs ASCII.
        given = mac.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected) or expires <= self._clock():
            return None
        return session_id

    def session_valid(self, value: str) -> bool:
        """Whether `value` is the cookie of a live session."""
        session_id = self._session_id(value)
        return session_id is not None and session_id in self._sessions

    def end_session(self, value: str) -> None:
        """Sign out: the session of cookie `value` is valid no more."""
        session_id = self._session_id(value)
        if session_id is not None:
            self._sessions.pop(session_id, None)

    async def check(self, request: web.Request, candidate: str | None, what: str) -> Verdict:
        """Check `candidate` against the token (None: an attempt without a usable token,
        wrong whatever it holds). A wrong one is answered after the delay; a client that
        failed too often lately (or everyone together) is refused without a check."""
        client = self.client(request)
        wait = self._throttle.start(client)
        if wait is not None:
            if (more := self._throttled_logged.due()) is not None:
                log.warning(
                    "%s: too many wrong tokens from %s: refused for %d s%s",
                    what,
                    client,
                    wait,
                    more,
                    extra=fields(peer=client),
                )
            return Verdict(outcome=Outcome.THROTTLED, retry_after=wait)
        right = candidate is not None and self.token_matches(candidate)
        try:
            if not right:
                if (more := self._wrong_logged.due()) is not None:
                    log.warning(
                        "%s: a wrong token from %s%s",
                        what,
                        client,
                        more,
                        extra=fields(peer=client),
                    )
                await asyncio.sleep(self._delay)
        finally:
            self._throttle.finish(client, failed=not right)
        return Verdict(outcome=Outcome.ALLOWED if right else Outcome.WRONG)

    async def admit(self, request: web.Request, what: str) -> Verdict:
        """The request's credentials: its bearer token, checked as `check` does (any
        other Authorization is a wrong token), else its session cookie."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.partition(" ")
            bearer = scheme.lower() == "bearer" and credentials.strip()
            return await self.check(request, credentials.strip() if bearer else None, what)
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and self.session_valid(cookie):
            return Verdict(outcome=Outcome.ALLOWED)
        return Verdict(outcome=Outcome.ANONYMOUS)
