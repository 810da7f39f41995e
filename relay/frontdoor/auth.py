"""SMTP AUTH: the accounts of `[[relay.users]]`, throttled per client address.

Checking a password costs an scrypt (tens of milliseconds, on purpose): it runs on a
thread, never on the event loop, and a client address that failed `FAILURES_ALLOWED`
times within `FAILURE_WINDOW` seconds, counting the attempts still being checked, is
refused without a check until its failures age out (`pixelpost.core.throttle`, which the
tracker's API token shares).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from pixelpost.config import RelayUser
from pixelpost.core import throttle
from pixelpost.core.passwords import verify_password
from pixelpost.logs import fields

log = logging.getLogger(__name__)

FAILURES_ALLOWED = throttle.FAILURES_ALLOWED
FAILURE_WINDOW = throttle.FAILURE_WINDOW
FAILURE_DELAY = 1.0
"""Seconds a failed attempt waits before its reply: it slows guessing down."""


class Throttled(Exception):
    """The client failed too often lately."""


class Accounts:
    """The relay's users, and recent failures by client address."""

    def __init__(
        self,
        users: Sequence[RelayUser],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = {user.name: user for user in users}
        # Read when the relay starts, so that tests can set them. No limit in all: a
        # client must authenticate only to relay, and each one is bounded on its own.
        self._throttle = throttle.Throttle(
            per_client=FAILURES_ALLOWED, in_all=None, window=FAILURE_WINDOW, clock=clock
        )

    def __bool__(self) -> bool:
        return bool(self._users)

    async def verify(self, client: str, login: str, password: str) -> str | None:
        """The user name if `login` and `password` match an account; None otherwise.
        Raises Throttled, without checking, for a client that failed too often."""
        if self._throttle.start(client) is not None:
            raise Throttled
        user = self._users.get(login)
        # An unknown login costs as much as a wrong password: timing tells nothing.
        hashed = user.password_hash if user is not None else _DUMMY_HASH
        ok = False
        try:
            ok = await asyncio.to_thread(verify_password, password, hashed) and user is not None
        finally:
            self._throttle.finish(client, failed=not ok)
        if ok and user is not None:
            return user.name
        log.warning(
            "%s: authentication failed for %r", client, login[:64], extra=fields(peer=client)
        )
        await asyncio.sleep(FAILURE_DELAY)
        return None

    def may_send_from(self, name: str, mail_from: str) -> bool:
        """Whether user `name` may use the envelope sender `mail_from`."""
        user = self._users.get(name)
        if user is None:
            return False
        if user.from_domains is None:
            return True
        domain = mail_from.rpartition("@")[2].lower()
        return "@" in mail_from and domain in user.from_domains

    def may_sign_for(self, name: str, domain: str) -> bool:
        """Whether user `name` may send mail From `domain` (in A-labels) that pixelpost
        signs: a user held to from_domains sends as those domains only, in the From
        field too, as at MAIL FROM."""
        user = self._users.get(name)
        if user is None:
            return False
        return user.from_domains is None or domain in {_a_label(d) for d in user.from_domains}


def _a_label(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()


_DUMMY_HASH = "$scrypt$ln=15,r=8,p=1$" + "A" * 22 + "$" + "A" * 43
"""A well-formed hash no password matches, checked for unknown logins."""
