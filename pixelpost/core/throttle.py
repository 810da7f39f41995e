"""Failed credentials counted per client address and in all, for the relay's SMTP AUTH
and the tracker's API token: past a limit, attempts are refused without a check until
enough failures age out (Postfix's `smtpd_client_auth_rate_limit`).

An attempt counts from the moment it starts. A failure is answered after a delay, and
attempts still waiting for their answer count against the limit too: parallel guesses
are bounded exactly as one after the other are.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

FAILURES_ALLOWED = 5
"""Failures (and attempts in flight) per client address within `FAILURE_WINDOW`."""
FAILURES_ALLOWED_IN_ALL = 100
"""The same from every address together: a guesser with many addresses is bounded too
(None: no such limit)."""
FAILURE_WINDOW = 300.0
TRACKED_CLIENTS = 10_000
"""Addresses whose failures are remembered (the oldest are forgotten first)."""


class Throttle:
    """Attempts in flight and recent failures, per client address and in all."""

    def __init__(
        self,
        *,
        per_client: int = FAILURES_ALLOWED,
        in_all: int | None = FAILURES_ALLOWED_IN_ALL,
        window: float = FAILURE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_client = per_client
        self._in_all = in_all
        self._window = window
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._all_failures: collections.deque[float] = collections.deque()
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._all_in_flight = 0

    def _expire(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self._window:
            times.popleft()

    def _wait(
        self, times: collections.deque[float], in_flight: int, limit: int, now: float
    ) -> int:
        """Seconds until `times` and `in_flight` are below `limit` again, at the least."""
        must_age_out = len(times) + in_flight - limit + 1
        if not 0 < must_age_out <= len(times):
            return 1  # attempts in flight hold it: they are answered within a second
        return max(1, math.ceil(times[must_age_out - 1] + self._window - now))

    def start(self, client: str) -> int | None:
        """Count an attempt by `client` as in flight, and return None; or, when `client`
        (or everyone together) failed too often lately, count nothing and return the
        seconds after which to try again."""
        now = self._clock()
        self._expire(self._all_failures, now)
        failures = self._failures.get(client)
        if failures is not None:
            self._expire(failures, now)
        recent = failures if failures is not None else collections.deque()
        in_flight = self._in_flight[client]
        if len(recent) + in_flight >= self._per_client:
            return self._wait(recent, in_flight, self._per_client, now)
        if self._in_all is not None and len(self._all_failures) + self._all_in_flight >= (
            self._in_all
        ):
            return self._wait(self._all_failures, self._all_in_flight, self._in_all, now)
        self._in_flight[client] = in_flight + 1
        self._all_in_flight += 1
        return None

    def finish(self, client: str, *, failed: bool) -> None:
        """The attempt `start` admitted is answered: a failure counts for
        `FAILURE_WINDOW` seconds; a success forgets the client's failures."""
        self._in_flight[client] -= 1
        if self._in_flight[client] <= 0:
            del self._in_flight[client]
        self._all_in_flight -= 1
        if not failed:
            self._failures.pop(client, None)
            return
        now = self._clock()
        failures = self._failures.setdefault(client, collections.deque())
        failures.append(now)
        self._failures.move_to_end(client)
        while len(self._failures) > TRACKED_CLIENTS:
            self._failures.popitem(last=False)
        self._all_failures.append(now)
