"""A real webhook receiver (aiohttp) for tests: records what arrives, answers as told."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    status: int = 200
    retry_after: str | None = None
    hold: asyncio.Event | None = None
    """While set and not yet released, requests wait (a slow endpoint)."""
    requests: list[Received] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._changed:
            self.requests.append(Received(headers=dict(request.headers), body=body))
            self._changed.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(status=self.status, text="receiver says hi", headers=headers)

    def wait_for(self, count: int, timeout: float = 15.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"receiver: expected {count} requests, got {len(self.requests)}"
                )

    async def wait(self, count: int, *, within: float = 15.0) -> None:
        await asyncio.to_thread(self.wait_for, count, within)

    @property
    def delivered_ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]


async def start_receiver(receiver: Receiver) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


class ThreadedReceiver:
    """A receiver on its own event loop in a thread, for the end-to-end tests."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_receiver(self.receiver), self._loop)
        self._runner, self.port = future.result(10)
        return self.port

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
