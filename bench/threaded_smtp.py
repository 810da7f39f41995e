"""An aiosmtpd server on an event loop of its own, in a thread: an upstream for code
that is not async (the crash benchmark, and the end-to-end tests, which drive
pixelpost in a subprocess)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiosmtpd.smtp import SMTP


class ThreadedSMTP:
    """Serves `handler` on 127.0.0.1, a free port; `options` go to aiosmtpd's SMTP."""

    def __init__(self, handler: object, **options: Any) -> None:
        self._handler = handler
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> int:
        self._thread.start()

        async def listen() -> asyncio.Server:
            return await self._loop.create_server(
                lambda: SMTP(self._handler, loop=self._loop, **self._options), "127.0.0.1", 0
            )

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def stop(self) -> None:
        server = self._server
        if server is not None:
            # Closed in the loop's own thread: asyncio's Server is not thread-safe, and
            # closing it from here races connections that end meanwhile.
            async def close() -> None:
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
