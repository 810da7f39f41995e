"""asyncio helpers the services share."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` have passed, then clear it.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as
    the event fires (CPython gh-86296), and a loop around it then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    event.clear()
