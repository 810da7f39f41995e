"""The relay's listening socket and its lifecycle.

`RelayServer` runs aiosmtpd on the caller's event loop. Stopping is graceful: no new
connections, messages being handed over get `grace` seconds to finish, then the
remaining connections are told `421` and closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
from asyncio import sslproto
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, AnyStr, Protocol

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)

from pixelpost.config import HostPort, RelayConfig, RelayTLS
from pixelpost.core.limits import ConnectionLimits
from pixelpost.errors import PixelpostError
from pixelpost.logs import fields
from relay import replies
from relay.frontdoor.access import client_address, format_peer
from relay.frontdoor.auth import Accounts, Throttled
from relay.frontdoor.data import (
    TooMuchData,
    has_bare_newlines,
    has_nul,
    normalize_newlines,
    read_data,
    remove_nul,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Listener:
    """A listening socket that a parent relay process made for its further processes."""

    socket: socket.socket
    implicit_tls: bool


IDENT = "pixelpost ESMTP"
GRACE_DEFAULT = 30.0
_CHECK = "pixelpost: check the credentials"
PROXY_TIMEOUT = 5.0
"""Seconds a load balancer has to send the PROXY header (relay.proxy_protocol)."""
LARGE_MESSAGES_AT_ONCE = 8
"""Messages over 1 MB (`relay.frontdoor.data.LARGE_MESSAGE`) read and processed at once; more
wait, held back by TCP, so that memory stays bounded however many clients send big
messages together. Small messages never wait for these."""


class Handler(Protocol):
    """aiosmtpd's hooks (`handle_RCPT`, `handle_DATA` …), and a wait for the messages
    being taken when the listener stops: the relay's, or the intake's."""

    async def drain(self, grace: float) -> bool: ...


class _Session(Session):
    """aiosmtpd's session without its deprecated `login_data`, which aiosmtpd itself
    still sets after every AUTH and then logs a warning about (pixelpost reads
    `auth_data`)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Connection(SMTP):
    """aiosmtpd's protocol, registering itself so that a stop can close it."""

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def __init__(
        self,
        handler: Handler,
        live: set[_Connection],
        large: asyncio.Semaphore,
        accounts: Accounts,
        admission: ConnectionLimits,
        *,
        bare_newlines: str = "normalize",
        implicit_tls: bool = False,
        tls_after_proxy: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        # AUTH only over TLS: after STARTTLS, or on the implicit-TLS port from the start.
        super().__init__(handler, auth_require_tls=not implicit_tls, **kwargs)
        self._admission = admission
        self._bare_newlines = bare_newlines
        self._refused = False
        self._client: str | None = None
        """The client as the connection limits count it; None until a PROXY header
        names it, when the relay is behind a balancer."""
        self._tls_after_proxy = tls_after_proxy
        self._released = False
        """Whether the connection limits no longer count this connection."""
        self._live = live
        self._large = large
        self._holds_large = False
        self._accounts = accounts
        self._implicit_tls = implicit_tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None and self.session is not None:
            self._tls_started(transport)
            return
        peer = transport.get_extra_info("peername")
        # Behind a balancer, the client is known from the PROXY header only.
        if self._proxy_timeout is None:
            self._client = str(client_address(peer) or peer)
        refusal = _too_many(self._admission.admit(self._client))
        if refusal is not None:
            # Told before aiosmtpd greets; this connection never becomes a session.
            shown = format_peer(peer)
            log.warning("%s: %s", shown, refusal, extra=fields(peer=shown))
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"{refusal}\r\n".encode())
            transport.close()
            self._refused = True
            return
        self._live.add(self)
        super().connection_made(transport)
        if self._implicit_tls and self.session is not None and self.session.ssl is None:
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}

    def _tls_started(self, transport: asyncio.BaseTransport) -> None:
        """After STARTTLS (or the TLS that follows a PROXY header), aiosmtpd calls
        connection_made again for the TLS transport, and starts a new session (RFC 3207
        asks to forget what came before). It is the same connection: it is not counted
        again, and its client stays the one the PROXY header named, not the balancer."""
        before = self.session
        assert before is not None
        super().connection_made(transport)
        assert self.session is not None
        self.session.peer = before.peer
        self.session.proxy_data = before.proxy_data

    # AUTH PLAIN and LOGIN: aiosmtpd reads the credentials and hands them to
    # _authenticate, synchronously; the check is an scrypt, so it is done here instead,
    # on a thread (relay.frontdoor.auth), and the builtin mechanisms are wrapped to await it.

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False, auth_data=auth_data, message=_CHECK)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_LOGIN(_, args))

    async def _check(self, parsed: AuthResult) -> AuthResult:
        if parsed.message is not _CHECK:
            return parsed  # the client's answer could not be read; aiosmtpd replied
        credentials = parsed.auth_data
        assert isinstance(credentials, LoginPassword)
        try:
            user = await self._accounts.verify(
                self._client or "unknown",  # as the limits count it (after PROXY, too)
                credentials.login.decode("utf-8", "replace"),
                credentials.password.decode("utf-8", "replace"),
            )
        except Throttled:
            return AuthResult(
                success=False,
                handled=False,  # aiosmtpd replies with the message
                message=replies.AUTH_THROTTLED,
            )
        if user is None:
            return AuthResult(success=False, handled=False)  # aiosmtpd replies 535
        return AuthResult(success=True, auth_data=user)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        # Released once, however often this is called (aiosmtpd calls it itself after
        # a failed STARTTLS handshake).
        if not self._released:
            self._released = True
            self._admission.release(self._client)
        self._live.discard(self)
        super().connection_lost(exc)

    async def handle_exception(self, error: Exception) -> str:
        """What a command that raised is answered, in one log line: only clients cause
        these (a failed TLS handshake, an address aiosmtpd's parser trips over)."""
        peer = format_peer(self.session.peer if self.session is not None else None)
        if isinstance(error, TLSSetupException):
            log.info(
                "%s: TLS handshake failed: %r", peer, error.__cause__, extra=fields(peer=peer)
            )
            return replies.TLS_HANDSHAKE_FAILED
        log.warning("%s: command failed: %r", peer, error, extra=fields(peer=peer))
        return replies.COMMAND_FAILED

    async def proxied(self, proxy_data: ProxyData) -> bool:
        """The PROXY header's client becomes this session's peer (for allow_networks,
        AUTH throttling, limits, logs and ses:source-ip); on the implicit-TLS port, TLS
        starts after it. False refuses the connection."""
        assert self.session is not None
        if not proxy_data.valid or proxy_data.src_addr is None:
            peer = format_peer(self.session.peer)
            log.warning(
                "%s: bad PROXY header: %s", peer, proxy_data.error, extra=fields(peer=peer)
            )
            return False
        if isinstance(proxy_data.src_addr, IPv4Address | IPv6Address):
            # aiosmtpd types peer as a string; it holds the (host, port) of getpeername.
            self.session.peer = (str(proxy_data.src_addr), proxy_data.src_port or 0)  # type: ignore[assignment]
        if self._tls_after_proxy is not None and not await self._start_tls(self._tls_after_proxy):
            return False
        client = str(client_address(self.session.peer) or self.session.peer)
        refusal = _too_many(self._admission.identify(client))
        if refusal is not None:
            self._released = True  # by identify
            peer = format_peer(self.session.peer)
            log.warning("%s: %s", peer, refusal, extra=fields(peer=peer))
            transport = self.transport
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(f"{refusal}\r\n".encode())
            return False
        self._client = client
        return True

    async def _start_tls(self, context: ssl.SSLContext) -> bool:
        """TLS on this connection now, as STARTTLS would, without the command: a
        balancer sends its PROXY header in the clear, ahead of the client's handshake.
        Whatever of the handshake came with the header is handed on."""
        assert self.session is not None
        assert self.transport is not None
        buffered: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        early = bytes(buffered)
        buffered.clear()
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(
            self.loop, self, context, waiter, server_side=True
        )
        self._original_transport = self.transport
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        view = memoryview(early)
        while view:
            buffer = self._tls_protocol.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            self._tls_protocol.buffer_updated(size)
            view = view[size:]
        try:
            await waiter
        except (OSError, ssl.SSLError) as exc:
            peer = format_peer(self.session.peer)
            log.info("%s: TLS handshake failed: %s", peer, exc, extra=fields(peer=peer))
            self.transport.close()
            return False
        return True

    def _timeout_cb(self) -> None:
        """The client was silent past relay.timeout: say so, as Postfix does, then
        close."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{replies.TIMEOUT}\r\n".encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else super().eof_received()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(replies.ENHANCED.get(status, status))
        else:
            await super().push(status)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS, but once only: inside TLS it would start TLS again."""
        if self._tls_protocol is not None:
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the message read a buffer at a time (`relay.frontdoor.data`)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        await self.push(replies.START_DATA)
        try:
            content = await read_data(
                self._reader,
                self.data_size_limit,
                on_large=self._admit_large,
                on_oversize=self._release_large,  # draining needs no place
            )
        except TooMuchData:
            self._release_large()
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(replies.TOO_MUCH_DATA)
            return
        except BaseException:
            self._release_large()
            raise
        # The raw material of SMTP smuggling never goes on: bare LF and CR become CRLF,
        # NUL bytes are removed; or, with relay.bare_newlines = "reject", such a message
        # is refused.
        refusal = None
        if has_bare_newlines(content):
            refusal = replies.BARE_NEWLINE
            content = normalize_newlines(content)
        if has_nul(content):
            refusal = refusal or replies.NUL_CHARACTER
            content = remove_nul(content)
        if refusal is not None and self._bare_newlines == "reject":
            self._release_large()
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(refusal)
            return
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
            transport.write(f"{replies.SHUTTING_DOWN}\r\n".encode())
            transport.close()


def _too_many(reason: str | None) -> str | None:
    """The reply to a connection the limits refused, Postfix's way."""
    return None if reason is None else replies.too_many_connections(reason)


def server_tls_context(tls: RelayTLS) -> ssl.SSLContext:
    """The relay's TLS context (TLS 1.2 or newer) with its certificate loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_certificate(context, tls)
    return context


def _load_certificate(context: ssl.SSLContext, tls: RelayTLS) -> None:
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise PixelpostError(
            f"cannot load the relay's certificate ({tls.cert}, {tls.key}): {exc}"
        ) from exc


class RelayServer:
    """The SMTP listeners: `relay.listen` (STARTTLS offered when `[relay.tls]` is
    set) and `relay.tls.listen_tls` (implicit TLS)."""

    def __init__(
        self,
        *,
        config: RelayConfig,
        handler: Handler,
        accounts: Accounts | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "relay",
    ) -> None:
        self._config = config
        self._name = name
        self._handler = handler
        self._accounts = accounts or Accounts(config.users)
        self._inherited = listeners
        self._servers: list[tuple[asyncio.Server, bool]] = []
        """Each listening server, and whether it speaks implicit TLS."""
        self._live: set[_Connection] = set()
        self._large = asyncio.Semaphore(LARGE_MESSAGES_AT_ONCE)
        self._tls = server_tls_context(config.tls) if config.tls is not None else None
        self._admission = ConnectionLimits(
            total=config.max_connections, per_client=config.max_connections_per_ip
        )

    def _protocol(self, *, implicit_tls: bool = False) -> _Connection:
        # Behind a balancer, the implicit-TLS port takes the PROXY header in the clear
        # and starts TLS after it; otherwise asyncio does TLS before the protocol starts.
        proxy = self._config.proxy_protocol
        return _Connection(
            self._handler,
            self._live,
            self._large,
            self._accounts,
            self._admission,
            bare_newlines=self._config.bare_newlines,
            proxy_protocol_timeout=PROXY_TIMEOUT if proxy else None,
            implicit_tls=implicit_tls and not proxy,
            tls_after_proxy=self._tls if implicit_tls and proxy else None,
            timeout=self._config.timeout,
            tls_context=None if implicit_tls else self._tls,
            # Without accounts, AUTH is never offered.
            auth_exclude_mechanism=None if self._accounts else ["PLAIN", "LOGIN"],
            hostname=self._config.hostname,
            ident=IDENT,
            data_size_limit=self._config.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        """Listen on `relay.listen` and `relay.tls.listen_tls`, or on the listeners a
        parent process made (`listeners`)."""
        try:
            if self._inherited:
                for listener in self._inherited:
                    await self._serve(listener.implicit_tls, sock=listener.socket)
                return
            await self._serve(False, address=self._config.listen)
            tls = self._config.tls
            if tls is not None and tls.listen_tls is not None:
                await self._serve(True, address=tls.listen_tls)
        except BaseException:
            for server, _ in self._servers:
                server.close()
            self._servers = []
            raise

    async def _serve(
        self,
        implicit_tls: bool,
        *,
        address: HostPort | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        factory = functools.partial(self._protocol, implicit_tls=implicit_tls)
        # Behind a balancer the implicit-TLS port reads the PROXY header in the clear.
        context = self._tls if implicit_tls and not self._config.proxy_protocol else None
        try:
            if sock is not None:
                server = await loop.create_server(factory, sock=sock, ssl=context)
            else:
                assert address is not None
                # No SO_REUSEPORT: a second pixelpost (or anything else) on the port
                # fails here rather than taking a share of the mail. Further relay
                # processes of this one serve the same sockets (`listeners`).
                server = await loop.create_server(factory, address.host, address.port, ssl=context)
        except OSError as exc:
            where = address or HostPort(host="?", port=0)
            reason = os.strerror(exc.errno) if exc.errno else exc.strerror
            raise OSError(
                exc.errno,
                f"cannot listen for SMTP on {where}: {reason} (is another pixelpost or "
                "MTA running there?)",
            ) from exc
        self._servers.append((server, implicit_tls))
        log.info(
            "%s listening on %s%s",
            self._name,
            _address(server),
            " (implicit TLS)" if implicit_tls else " (STARTTLS)" if self._tls else "",
        )

    def listeners(self) -> list[Listener]:
        """The listening sockets, duplicated, for further relay processes to serve
        (`RelayServer(listeners=…)`): they share this one's port and nobody else can."""
        return [
            Listener(socket=sock.dup(), implicit_tls=implicit)
            for server, implicit in self._servers
            for sock in server.sockets
        ]

    def reload_tls(self) -> None:
        """Load the certificate again (after SIGHUP): new connections get it, the open
        ones keep theirs. A certificate that does not load changes nothing."""
        tls = self._config.tls
        if tls is None or self._tls is None:
            return
        server_tls_context(tls)  # raises, naming the files, if they do not load
        _load_certificate(self._tls, tls)
        log.info("relay: certificate %s loaded again", tls.cert)

    @property
    def connections(self) -> int:
        """Connections open now, as the limits count them."""
        return self._admission.count

    @property
    def tls_address(self) -> HostPort | None:
        """Where the implicit-TLS listener is, if there is one."""
        found = [server for server, implicit in self._servers if implicit]
        return _address(found[0]) if found else None

    @property
    def address(self) -> HostPort:
        """Where the relay listens (the real port when the configuration says 0)."""
        found = [server for server, implicit in self._servers if not implicit]
        assert found, "start() first"
        return _address(found[0])

    async def stop(self, *, grace: float = GRACE_DEFAULT) -> None:
        if not self._servers:
            return
        for server, _ in self._servers:
            server.close()
        if not await self._handler.drain(grace):
            log.warning("%s: messages still being taken after %.0fs; closing", self._name, grace)
        for connection in list(self._live):
            connection.shut_down()
        for server, _ in self._servers:
            await server.wait_closed()
        self._servers = []


def _address(server: asyncio.Server) -> HostPort:
    host, port = server.sockets[0].getsockname()[:2]
    return HostPort(host=host, port=port)
