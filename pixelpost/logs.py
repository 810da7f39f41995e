"""Logging, set up alike in every pixelpost process, and a limit for lines that anyone
(a client, a store in trouble) could repeat without end."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
"""Like syslog's `program[pid]`: with `relay.workers > 1` it tells the processes apart."""


def setup(level: int) -> None:
    """Log at `level` on standard error.

    aiosmtpd logs every command it reads at INFO, AUTH lines included: it is kept to
    warnings unless debugging, so that credentials never reach the log.
    """
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    if level > logging.DEBUG:
        logging.getLogger("mail.log").setLevel(logging.WARNING)


class LogEvery:
    """Lets a repeated line through at most once per `interval` seconds, and counts the
    occurrences held back in between so that the next line can say how many there were."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._held = 0

    def due(self) -> str | None:
        """None when this occurrence is held back; otherwise the end of the caller's
        line, saying how many were held back since the last one ("" for none)."""
        now = self._clock()
        if now - self._last < self._interval:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return f" ({held} more since the last such line)" if held else ""
