"""SMTP AUTH: the accounts of `[[relay.users]]`, throttled per client address.

Checking a password costs an scrypt (tens of milliseconds, on purpose): it runs on a
thread, never on the event loop, and a client address that failed `FAILURES_ALLOWED`
times within `FAILURE_WINDOW` seconds, counting the attempts still being checked, is
refused without a check until its failures age out, as Postfix's
`smtpd_client_auth_rate_limit` does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence

from pixelpost.config import RelayUser
from pixelpost.passwords import verify_password

log = logging.getLogger(__name__)

FAILURES_ALLOWED = 5
FAILURE_WINDOW = 300.0
FAILURE_DELAY = 1.0
"""Seconds a failed attempt waits before its reply: it slows guessing down."""
TRACKED_CLIENTS = 10_000
"""Addresses whose failures are remembered (the oldest are forgotten first)."""


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
        self._clock = clock
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._checking: collections.Counter[str] = collections.Counter()

    def __bool__(self) -> bool:
        return bool(self._users)

    async def verify(self, client: str, login: str, password: str) -> str | None:
        """The user name if `login` and `password` match an account; None otherwise.
        Raises Throttled, without checking, for a client that failed too often."""
        now = self._clock()
        recent = [t for t in self._failures.get(client, ()) if now - t < FAILURE_WINDOW]
        # Attempts still being checked count as failures until they are known not to
        # be: parallel connections cannot get more guesses in than one after another.
        if len(recent) + self._checking[client] >= FAILURES_ALLOWED:  # read at each call
            raise Throttled
        user = self._users.get(login)
        # An unknown login costs as much as a wrong password: timing tells nothing.
        hashed = user.password_hash if user is not None else _DUMMY_HASH
        self._checking[client] += 1
        try:
            ok = await asyncio.to_thread(verify_password, password, hashed)
        finally:
            self._checking[client] -= 1
            if self._checking[client] <= 0:
                del self._checking[client]
        if ok and user is not None:
            self._failures.pop(client, None)
            return user.name
        now = self._clock()
        recent = [t for t in self._failures.get(client, ()) if now - t < FAILURE_WINDOW]
        recent.append(now)
        self._failures[client] = recent
        self._failures.move_to_end(client)
        while len(self._failures) > TRACKED_CLIENTS:
            self._failures.popitem(last=False)
        log.warning("%s: authentication failed for %r", client, login[:64])
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


_DUMMY_HASH = "$scrypt$ln=15,r=8,p=1$" + "A" * 22 + "$" + "A" * 43
"""A well-formed hash no password matches, checked for unknown logins."""
