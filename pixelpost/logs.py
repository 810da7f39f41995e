"""Logging, set up alike in every pixelpost process."""

from __future__ import annotations

import logging
import sys

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
