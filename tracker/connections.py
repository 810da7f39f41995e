"""Connections to the tracker, bounded in all and per client address.

A connection past a limit is answered `503` and closed before aiohttp sees it. Behind a
reverse proxy every recipient arrives from the proxy's address, so the trusted proxies
count towards the total only. The limits are those of one process: each tracker process
(`tracker.workers`) counts the connections it accepted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from aiohttp import web

from pixelpost.config import HostPort
from pixelpost.core.limits import ConnectionLimits
from pixelpost.logs import LogEvery, fields

log = logging.getLogger(__name__)

REFUSAL_LINGER = 1.0
"""Seconds a refused connection is still read (and what comes dropped) after its
answer: closing on a request not read yet would reset the connection, and the client
might never see the answer."""
REFUSALS_LOGGED_EVERY = 10.0


def _refusal(reason: str) -> bytes:
    body = f"The tracker refused the connection: {reason}; try again later.\n".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Admitted(asyncio.Protocol):
    """Admits a connection by the limits, then hands everything to aiohttp's handler
    for it; or answers 503 and closes."""

    def __init__(
        self,
        make_handler: Callable[[], asyncio.Protocol],
        limits: ConnectionLimits,
        refusals_logged: LogEvery,
        refused: set[asyncio.Transport],
    ) -> None:
        self._make_handler = make_handler
        self._limits = limits
        self._refusals_logged = refusals_logged
        self._refused = refused
        self._handler: asyncio.Protocol | None = None
        self._peer = ""
        self._transport: asyncio.Transport | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        self._peer = str(peername[0]) if peername else ""
        refusal = self._limits.admit(self._peer)
        if refusal is None:
            self._handler = self._make_handler()
            self._handler.connection_made(transport)
            return
        if (more := self._refusals_logged.due()) is not None:
            log.warning(
                "%s: connection refused: %s%s",
                self._peer,
                refusal,
                more,
                extra=fields(peer=self._peer),
            )
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._refused.add(transport)
        transport.write(_refusal(refusal))
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            return self._handler.eof_received()
        return None  # refused, and the client is done: close

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:
            self._limits.release(self._peer)
            self._handler.connection_lost(exc)
        elif self._transport is not None and self._linger is not None:
            self._refused.discard(self._transport)
            self._linger.cancel()


class LimitedSite(web.BaseSite):
    """A TCP site whose connections `limits` admits before aiohttp reads them: on
    `listen`, or on `sock`, a listening socket that a parent process made."""

    __slots__ = (
        "_host",
        "_limits",
        "_listening",
        "_port",
        "_refusals_logged",
        "_refused",
        "_sock",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        listen: HostPort,
        *,
        limits: ConnectionLimits,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner)
        self._host = listen.host
        self._port = listen.port
        self._sock = sock
        self._listening: asyncio.Server | None = None
        self._limits = limits
        self._refusals_logged = LogEvery(REFUSALS_LOGGED_EVERY)
        self._refused: set[asyncio.Transport] = set()
        """Refused connections, still read until they close."""

    @property
    def name(self) -> str:
        return f"http://{HostPort(host=self._host, port=self._port)}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def admitted() -> _Admitted:
            return _Admitted(server, self._limits, self._refusals_logged, self._refused)

        if self._sock is not None:
            listening = await loop.create_server(admitted, sock=self._sock, backlog=self._backlog)
        else:
            listening = await loop.create_server(
                admitted, self._host, self._port, backlog=self._backlog
            )
        self._server = self._listening = listening

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (none before `start`)."""
        return tuple(self._listening.sockets) if self._listening is not None else ()

    async def stop(self) -> None:
        await super().stop()
        for transport in list(self._refused):
            transport.close()
