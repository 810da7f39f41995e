"""asyncio helpers the services share."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

T = TypeVar("T")

LOOP_ENV: Final = "PIXELPOST_EVENT_LOOP"
"""Overrides the event loop every process picks: `asyncio` (the standard library's) or
`uvloop`; for comparing the two, or should one misbehave."""


def loop_factory(
    *, uvloop: bool, environ: Mapping[str, str] | None = None
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where `uvloop` asks for it and it is installed, else None
    (the standard library's); PIXELPOST_EVENT_LOOP decides over both."""
    choice = (os.environ if environ is None else environ).get(LOOP_ENV, "")
    if choice == "asyncio" or (not uvloop and choice != "uvloop"):
        return None
    try:
        import uvloop as fast  # noqa: PLC0415 (optional: where it does not install, asyncio's)
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return fast.new_event_loop


def loop_name() -> str:
    """The running event loop, for people: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, uvloop: bool) -> T:
    """Run a service's `main` to its end, on uvloop's event loop if `uvloop` (where it
    is installed). bench.tracker and bench.relay measure where it pays: the tracker and
    the dispatcher run faster on it (the pixel 1.24x), the relay slower (0.8x), so a
    process that relays mail keeps the standard library's."""
    with asyncio.Runner(loop_factory=loop_factory(uvloop=uvloop)) as runner:
        return runner.run(main)


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` have passed, then clear it.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as
    the event fires (CPython gh-86296), and a loop around it then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    event.clear()
