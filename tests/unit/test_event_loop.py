"""Which event loop a process runs on: uvloop where it was asked for and installs, the
standard library's otherwise, and PIXELPOST_EVENT_LOOP over both."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from pixelpost import aio


def test_uvloop_where_asked_for_and_asyncio_elsewhere() -> None:
    assert aio.loop_factory(uvloop=True, environ={}) is uvloop.new_event_loop
    assert aio.loop_factory(uvloop=False, environ={}) is None


def test_the_environment_decides_over_both() -> None:
    forced = {aio.LOOP_ENV: "asyncio"}
    assert aio.loop_factory(uvloop=True, environ=forced) is None
    insisted = {aio.LOOP_ENV: "uvloop"}
    assert aio.loop_factory(uvloop=False, environ=insisted) is uvloop.new_event_loop


@pytest.mark.parametrize(("fast", "name"), [(True, "uvloop"), (False, "asyncio")])
def test_run_runs_on_the_loop_it_names(
    fast: bool, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(aio.LOOP_ENV, raising=False)

    async def main() -> str:
        await asyncio.sleep(0)
        return aio.loop_name()

    assert aio.run(main(), uvloop=fast) == name
