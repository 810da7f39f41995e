"""The relay's listening socket and its lifecycle.

`RelayServer` runs aiosmtpd on the caller's event loop. Stopping is graceful: no new
connections, messages being handed over get `grace` seconds to finish, then the
remaining connections are told `421` and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from pixelpost.config import HostPort, RelayConfig
from relay.data import TooMuchData, read_data
from relay.handler import RelayHandler

log = logging.getLogger(__name__)

IDENT = "pixelpost ESMTP"
GRACE_DEFAULT = 30.0
LARGE_MESSAGES_AT_ONCE = 8
"""Messages over 1 MB (`relay.data.LARGE_MESSAGE`) read and processed at once; more
wait, held back by TCP, so that memory stays bounded however many clients send big
messages together. Small messages never wait for these."""


class _Connection(SMTP):
    """aiosmtpd's protocol, registering itself so that a stop can close it."""

    def __init__(
        self,
        handler: RelayHandler,
        live: set[_Connection],
        large: asyncio.Semaphore,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._live = live
        self._large = large
        self._holds_large = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        super().connection_lost(exc)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the message read a buffer at a time (`relay.data`)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(
                self._reader, self.data_size_limit, on_large=self._admit_large
            )
        except TooMuchData:
            self._release_large()
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("552 5.3.4 Error: Too much mail data")
            return
        except BaseException:
            self._release_large()
            raise
        self.envelope.content = self.envelope.original_content = content
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            self._release_large()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _admit_large(self) -> None:
        """Wait for one of the few places for a large message: it is held in memory,
        several times over while it is rewritten and spooled."""
        await self._large.acquire()
        self._holds_large = True

    def _release_large(self) -> None:
        if self._holds_large:
            self._holds_large = False
            self._large.release()

    def shut_down(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.3.2 Service shutting down, closing connection\r\n")
            transport.close()


class RelayServer:
    """The SMTP listener."""

    def __init__(
        self, *, config: RelayConfig, handler: RelayHandler, reuse_port: bool = False
    ) -> None:
        self._config = config
        self._handler = handler
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._live: set[_Connection] = set()
        self._large = asyncio.Semaphore(LARGE_MESSAGES_AT_ONCE)

    def _protocol(self) -> _Connection:
        return _Connection(
            self._handler,
            self._live,
            self._large,
            hostname=self._config.hostname,
            ident=IDENT,
            data_size_limit=self._config.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        listen = self._config.listen
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._protocol,
                listen.host,
                listen.port,
                # Several relay processes share the port when relay.workers > 1; one alone
                # does not, so that a second instance by mistake fails to start.
                reuse_port=self._reuse_port or None,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen for SMTP on {listen}: {exc.strerror}"
            ) from exc
        log.info("relay listening on %s", self.address)

    @property
    def address(self) -> HostPort:
        """Where the relay listens (the real port when the configuration says 0)."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return HostPort(host=host, port=port)

    async def stop(self, *, grace: float = GRACE_DEFAULT) -> None:
        if self._server is None:
            return
        self._server.close()
        if not await self._handler.drain(grace):
            log.warning("relay: messages still being handed over after %.0fs; closing", grace)
        for connection in list(self._live):
            connection.shut_down()
        await self._server.wait_closed()
        self._server = None
