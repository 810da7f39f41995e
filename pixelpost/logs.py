"""Logging, set up alike in every pixelpost process, and a limit for lines that anyone
(a client, a store in trouble) could repeat without end."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Literal

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
"""Like syslog's `program[pid]`: with `relay.workers > 1` it tells the processes apart."""

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

FIELDS = ("message_id", "peer")
"""The structured fields a JSON line may carry, from a log call's `extra=` (made by
`fields`): the message a line is about, and the client (`host:port`, or the address
alone where the port is not known). Nothing else of a record is written, so that no
attribute someone sets on a record for another reason (a command line, a URL with a
token) ever reaches the log."""


def fields(*, message_id: str | None = None, peer: str | None = None) -> dict[str, str]:
    """The `extra=` of a line about a message or a client; the text says the same
    (the message id or peer first), these make it a field of a JSON line."""
    found = {"message_id": message_id, "peer": peer}
    return {name: value for name, value in found.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, milliseconds), `level`, `logger`,
    `process`, `message`, then the `FIELDS` a record carries, and `exc_info` and
    `stack` as strings when there are any: a traceback never spans lines."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{when}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII escapes keep a line one line even for U+2028 and friends in a message.
        return json.dumps(entry, default=str)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """What writes the lines of `log_format`: text (`FORMAT`) or JSON."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(FORMAT)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")


def setup(level: int, log_format: LogFormat = "text") -> None:
    """Log at `level` on standard error, in `log_format`.

    aiosmtpd logs every command it reads at INFO, AUTH lines included: it is kept to
    warnings unless debugging, so that credentials never reach the log. flufl.bounce
    logs a line per detector per returned message: kept to warnings too.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    # Python's warnings go through the same handler, so that a JSON log stays JSON.
    logging.captureWarnings(log_format == "json")
    if level > logging.DEBUG:
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        logging.getLogger("flufl.bounce").setLevel(logging.WARNING)


def current_format() -> LogFormat:
    """The format this process logs in, for child processes to log alike."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"


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
