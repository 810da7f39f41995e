from __future__ import annotations

import asyncio

import pytest

from pixelpost.aio import wait_event


async def test_wait_event_returns_when_set_and_clears_it() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    await asyncio.wait_for(wait_event(event, 10), 5)
    assert not event.is_set()


async def test_wait_event_times_out() -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_event(event, 0.05)
    assert loop.time() - started >= 0.05


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_loop_cancelled_as_the_event_fires_stops(turns: int) -> None:
    event = asyncio.Event()

    async def forever() -> None:
        while True:
            await wait_event(event, 10)

    loop = asyncio.create_task(forever())
    await asyncio.sleep(0)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    loop.cancel()
    await asyncio.wait({loop}, timeout=1)
    assert loop.cancelled()
