"""The tracker's listening socket and its lifecycle."""

from __future__ import annotations

import logging

from aiohttp import web

from pixelpost.config import HostPort

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_DEFAULT = 10.0


class TrackerServer:
    """Runs an aiohttp application on the caller's event loop."""

    def __init__(self, *, app: web.Application, listen: HostPort) -> None:
        self._listen = listen
        # The reverse proxy in front keeps the access log; writing one here would cost
        # the tracker a good part of its throughput.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_DEFAULT
        )
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen.host, self._listen.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen for HTTP on {self._listen}: {exc.strerror}"
            ) from exc
        self._site = site
        log.info("tracker listening on %s", self.address)

    @property
    def address(self) -> HostPort:
        """Where the tracker listens (the real port when the configuration says 0)."""
        assert self._runner.addresses, "start() first"
        host, port = self._runner.addresses[0][:2]
        return HostPort(host=host, port=port)

    async def stop(self) -> None:
        await self._runner.cleanup()
