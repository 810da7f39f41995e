"""The tracker's listening socket and its lifecycle, with the limits every client meets:
the time to send a request's headers, connections at once (`tracker.connections`), and
one log line, never a traceback, for a request that does not parse. Further tracker
processes (`tracker.workers`) serve the first one's listening sockets."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pixelpost.config import HostPort, TrackerConfig
from pixelpost.core.limits import ConnectionLimits
from pixelpost.logs import LogEvery
from tracker.client import is_trusted
from tracker.connections import LimitedSite

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_DEFAULT = 10.0
BAD_REQUESTS_LOGGED_EVERY = 1.0
BAD_REQUEST_SHOWN = 200
"""Characters of a parser's complaint shown in the log (it quotes the client's bytes)."""


def describe_bad_request(error: HttpProcessingError) -> str:
    """aiohttp's complaint about a request, on one line and bounded."""
    text = " ".join(str(error.message).split())
    return text if len(text) <= BAD_REQUEST_SHOWN else text[: BAD_REQUEST_SHOWN - 1] + "…"


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, but a request that does not parse is the client's doing:
    one line with its address (at most one a second), not an error with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._bad_logged = LogEvery(BAD_REQUESTS_LOGGED_EVERY)

    def _bad_request(
        self, level: int, args: tuple[object, ...], error: HttpProcessingError
    ) -> None:
        if (more := self._bad_logged.due()) is None:
            return
        # aiohttp says "Error handling request from %s" with the peer's address.
        peer = args[0] if len(args) == 1 else "?"
        log.log(
            level,
            "%s: bad request refused (%s %s): %s%s",
            peer,
            error.code,
            type(error).__name__,
            describe_bad_request(error),
            more,
        )

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: object = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._bad_request(logging.WARNING, args, exc_info)
            return
        super().exception(
            msg,
            *args,
            exc_info=exc_info,  # type: ignore[arg-type]
            stack_info=stack_info,
            stacklevel=stacklevel,
            extra=extra,
            **kwargs,
        )

    def debug(
        self,
        msg: object,
        *args: object,
        exc_info: object = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        # aiohttp logs at debug what is not HTTP at all (a TLS hello, a port scan).
        if isinstance(exc_info, HttpProcessingError):
            self._bad_request(logging.DEBUG, args, exc_info)
            return
        super().debug(
            msg,
            *args,
            exc_info=exc_info,  # type: ignore[arg-type]
            stack_info=stack_info,
            stacklevel=stacklevel,
            extra=extra,
            **kwargs,
        )


class TrackerServer:
    """Runs an aiohttp application on the caller's event loop, as `config` says: on
    `config.listen`, or on `sockets` that a parent process made."""

    def __init__(
        self,
        *,
        app: web.Application,
        config: TrackerConfig,
        name: str = "tracker",
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        self._listen = config.listen
        self._inherited = tuple(sockets)
        self._name = name
        """What listens, for the log (the relay's health listener is one too)."""
        # The reverse proxy in front keeps the access log; writing one here would cost
        # the tracker a good part of its throughput.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_DEFAULT,
            # aiohttp closes a connection whose next request has not fully arrived
            # this long after it connected or got its last answer
            # (RequestHandler._process_keepalive): that bounds the reading of a request
            # line and headers, and idle keep-alive connections alike. Bytes trickling
            # in do not push it back.
            keepalive_timeout=config.header_timeout,
            logger=_ServerLog(),
        )
        self._limits = ConnectionLimits(
            total=config.max_connections,
            per_client=config.max_connections_per_ip,
            exempt=lambda peer: is_trusted(peer, config.trusted_proxies),
        )
        self._sites: list[LimitedSite] = []

    async def start(self) -> None:
        await self._runner.setup()
        sites = [
            LimitedSite(self._runner, self._listen, limits=self._limits, sock=sock)
            for sock in self._inherited
        ] or [LimitedSite(self._runner, self._listen, limits=self._limits)]
        try:
            for site in sites:
                await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                exc.errno, f"cannot listen for HTTP on {self._listen}: {exc.strerror}"
            ) from exc
        self._sites = sites
        log.info("%s listening on %s", self._name, self.address)

    def sockets(self) -> list[socket.socket]:
        """The listening sockets, duplicated, for further tracker processes to serve
        (`TrackerServer(sockets=…)`): they share this one's port, and no other program
        can take it (nothing binds it with SO_REUSEPORT)."""
        return [sock.dup() for site in self._sites for sock in site.sockets]

    @property
    def address(self) -> HostPort:
        """Where the tracker listens (the real port when the configuration says 0)."""
        assert self._runner.addresses, "start() first"
        host, port = self._runner.addresses[0][:2]
        return HostPort(host=host, port=port)

    async def stop(self) -> None:
        await self._runner.cleanup()
