"""Connections at once, in all and per client address, for the relay's SMTP listeners
and the tracker's HTTP one (Postfix's `smtpd_client_connection_count_limit`).

A connection may be admitted before its client is known (a balancer's, until its PROXY
header names the client): it counts in all only, until `identify` says whose it is.
Clients that `exempt` picks (a reverse proxy every recipient comes through) count in all
only, too.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

TOO_MANY = "too many connections"
TOO_MANY_FROM_CLIENT = "too many connections from your address"


class ConnectionLimits:
    """Counts connections; says why one may not be admitted."""

    def __init__(
        self,
        *,
        total: int,
        per_client: int,
        exempt: Callable[[str], bool] = lambda client: False,
    ) -> None:
        self._total_limit = total
        self._per_client_limit = per_client
        self._exempt = exempt
        self._total = 0
        self._per_client: collections.Counter[str] = collections.Counter()

    def admit(self, client: str | None) -> str | None:
        """None if a connection from `client` (None: not known yet) may go on, and it is
        counted; else why not."""
        if self._total >= self._total_limit:
            return TOO_MANY
        if client is not None and self._over(client):
            return TOO_MANY_FROM_CLIENT
        self._total += 1
        if client is not None:
            self._per_client[client] += 1
        return None

    def identify(self, client: str) -> str | None:
        """A connection admitted before its client was known turns out to be `client`'s:
        None if it may stay (it is counted as theirs), else why not (it is released)."""
        if self._over(client):
            self.release(None)
            return TOO_MANY_FROM_CLIENT
        self._per_client[client] += 1
        return None

    def _over(self, client: str) -> bool:
        return self._per_client[client] >= self._per_client_limit and not self._exempt(client)

    def release(self, client: str | None) -> None:
        self._total -= 1
        if client is None:
            return
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    @property
    def count(self) -> int:
        """Connections counted now."""
        return self._total
