"""A TCP proxy that a test can cut: between pixelpost and its PostgreSQL server, so that
the server goes out of reach (connections reset, new ones refused) and comes back,
without touching the machine's server. It runs on a thread of its own, so that tests
that drive subprocesses and tests on an event loop use it alike."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.net import free_port


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target` while it is up."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._thread.start()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def up(self) -> None:
        """Accept and forward connections (again)."""
        self._call(self._up())

    def down(self) -> None:
        """Refuse new connections and cut those open: the server is out of reach."""
        self._call(self._down())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target
            )
        except OSError:
            writer.transport.abort()
            return
        self._pipes |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        finally:
            for end in (writer, upstream_writer):
                self._pipes.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target: int) -> Iterator[TcpProxy]:
    """A proxy to `target`, up, closed after."""
    proxy = TcpProxy(target)
    proxy.up()
    try:
        yield proxy
    finally:
        proxy.close()
