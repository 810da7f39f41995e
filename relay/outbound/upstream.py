"""Transports to the next hop: an SMTP server through aiosmtplib, or a Maildir.

Both take one envelope and its bytes and return per-recipient results. Their failures
are translated here into `TemporaryDeliveryError` (4xx, timeout, no connection, TLS or
login trouble on our side) and `PermanentDeliveryError` (5xx for every recipient), so no
aiosmtplib or OS error leaves this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiosmtplib

from pixelpost.config import MaildirUpstream, SMTPUpstream, Upstream
from pixelpost.core.events import clean_text
from pixelpost.errors import PermanentDeliveryError, TemporaryDeliveryError
from pixelpost.files import blocking_folder
from relay.frontdoor.data import normalize_newlines, stuffed

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """An SMTP reply: code and text (lines joined by spaces)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, kw_only=True, slots=True)
class SendResult:
    """The upstream took the message for at least one recipient."""

    reply: Reply
    refused: Mapping[str, Reply] = field(default_factory=dict)
    """Recipients the upstream refused at RCPT, with its reply."""


class RecipientsRefused(Exception):
    """The upstream refused every recipient at RCPT: each one's reply (some may be
    temporary, some permanent)."""

    def __init__(self, refused: Mapping[str, Reply]) -> None:
        super().__init__(f"all {len(refused)} recipients refused")
        self.refused = refused


@dataclass(frozen=True, slots=True)
class Payload:
    """A message in the form its transport sends it (`Transport.prepare`)."""

    data: bytes
    size: int
    """The message's own size in octets (what SMTP's SIZE declares)."""


class Transport(Protocol):
    """Sends one message to the next hop."""

    def prepare(self, content: bytes) -> Payload:
        """`content` in the form `send` takes. Pure, and called off the event loop: for a
        large message it is the costly part (SMTP's dot-stuffing, say)."""
        ...

    async def send(
        self,
        *,
        mail_from: str,
        rcpt_tos: Sequence[str],
        payload: Payload,
        mail_options: Sequence[str],
    ) -> SendResult: ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where mail goes, for logs and the startup banner."""
        ...

    async def check(self) -> str:
        """Reach the upstream as a delivery would, send nothing, and say how it went;
        a TemporaryDeliveryError or PermanentDeliveryError says why it could not."""
        ...


POOL_IDLE_SECONDS = 30.0
"""An idle upstream connection older than this is closed rather than used again (most
MTAs drop idle clients after a minute or more)."""


def open_transport(upstream: Upstream, *, local_hostname: str, pool_size: int) -> Transport:
    """The transport for the configured upstream."""
    if isinstance(upstream, MaildirUpstream):
        return MaildirTransport(upstream.path)
    return SMTPTransport(upstream, local_hostname=local_hostname, pool_size=pool_size)


# aiosmtplib's start_tls: None upgrades when offered, unverified, as Postfix's "may"
# level does (an unverified certificate still beats plain text); True requires it.
_START_TLS: Mapping[str, bool | None] = {"opportunistic": None, "starttls": True, "tls": False}
_PASSED_MAIL_OPTIONS = frozenset({"BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8"})


def _one_line(text: str) -> str:
    """A reply's text on one line, as text (aiosmtplib keeps bytes that are not UTF-8
    as surrogates, which neither events nor notifications can carry)."""
    return clean_text(" ".join(text.split()))


class SMTPTransport:
    """Delivers over SMTP with aiosmtplib, reusing connections across messages."""

    def __init__(self, upstream: SMTPUpstream, *, local_hostname: str, pool_size: int) -> None:
        self._upstream = upstream
        self._local_hostname = local_hostname
        self._pool_size = pool_size
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._tls_context: ssl.SSLContext | None = None
        if upstream.security != "opportunistic":
            self._tls_context = ssl.create_default_context(
                cafile=str(upstream.ca_file) if upstream.ca_file else None
            )

    def describe(self) -> str:
        return self._upstream.url

    def _client(self) -> aiosmtplib.SMTP:
        upstream = self._upstream
        return aiosmtplib.SMTP(
            hostname=upstream.host,
            port=upstream.port,
            local_hostname=self._local_hostname,
            timeout=upstream.timeout,
            use_tls=upstream.security == "tls",
            start_tls=_START_TLS[upstream.security],
            validate_certs=upstream.security != "opportunistic",
            tls_context=self._tls_context,
        )

    def prepare(self, content: bytes) -> Payload:
        """The message as DATA carries it, ready to write: aiosmtplib's own `sendmail`
        would scan it three times on the event loop, which for a large message holds up
        every other session."""
        normalized = normalize_newlines(content)
        return Payload(stuffed(normalized), len(normalized))

    async def send(
        self,
        *,
        mail_from: str,
        rcpt_tos: Sequence[str],
        payload: Payload,
        mail_options: Sequence[str],
    ) -> SendResult:
        client = self._take_idle()
        if client is not None:
            try:
                return await self._transaction(client, mail_from, rcpt_tos, payload, mail_options)
            except _StaleConnection:
                pass  # the upstream had closed the idle connection: once more, on a new one
        client = await self._open()
        try:
            return await self._transaction(client, mail_from, rcpt_tos, payload, mail_options)
        except _StaleConnection as exc:
            raise exc.error from None

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if now - since < POOL_IDLE_SECONDS and client.is_connected:
                return client
            client.close()
        return None

    async def _open(self) -> aiosmtplib.SMTP:
        client = self._client()
        upstream = self._upstream
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # its extensions decide the MAIL options
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
            if upstream.username is not None and upstream.password is not None:
                await client.login(upstream.username, upstream.password)
        except BaseException as exc:
            client.close()
            raise _translate(exc, upstream) from None
        return client

    async def check(self) -> str:
        client = await self._open()
        try:
            tls = client.transport is not None and bool(
                client.transport.get_extra_info("sslcontext")
            )
            greeting = "TLS" if tls else "no TLS"
            login = ", logged in" if self._upstream.username is not None else ""
            return f"{self._upstream.host}:{self._upstream.port} answered ({greeting}{login})"
        finally:
            await _quit(client)

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        mail_from: str,
        rcpt_tos: Sequence[str],
        payload: Payload,
        mail_options: Sequence[str],
    ) -> SendResult:
        try:
            refused, data_reply = await _send(client, mail_from, rcpt_tos, payload, mail_options)
        except aiosmtplib.SMTPServerDisconnected as exc:
            client.close()
            raise _StaleConnection(_unreachable(exc, self._upstream)) from None
        except BaseException as exc:
            client.close()
            raise _translate(exc, self._upstream) from None
        if len(self._idle) < self._pool_size:
            self._idle.append((client, time.monotonic()))
        else:
            await _quit(client)
        return SendResult(
            reply=Reply(code=250, text=_one_line(data_reply)),
            refused={
                rcpt: Reply(code=r.code, text=_one_line(r.message)) for rcpt, r in refused.items()
            },
        )

    async def close(self) -> None:
        """Say goodbye on the idle connections."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client, _ in idle))


class _StaleConnection(Exception):
    """A pooled connection turned out to be closed."""

    def __init__(self, error: TemporaryDeliveryError | PermanentDeliveryError) -> None:
        self.error = error


def _unreachable(exc: BaseException, upstream: SMTPUpstream) -> TemporaryDeliveryError:
    return TemporaryDeliveryError(
        451,
        f"4.4.1 cannot deliver to {upstream.host}:{upstream.port}: "
        f"{_one_line(str(exc)) or type(exc).__name__}",
    )


def _translate(  # noqa: PLR0911 (one return per kind of error)
    exc: BaseException, upstream: SMTPUpstream
) -> TemporaryDeliveryError | PermanentDeliveryError | RecipientsRefused | BaseException:
    """An aiosmtplib or socket error as pixelpost's (anything else as it is)."""
    if isinstance(exc, (TemporaryDeliveryError, PermanentDeliveryError)):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return RecipientsRefused(
            {r.recipient: Reply(code=r.code, text=_one_line(r.message)) for r in exc.recipients}
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Our credentials are wrong: the sender's mail is fine, so never bounce it.
        return TemporaryDeliveryError(
            451, f"4.7.0 upstream login failed: {exc.code} {_one_line(exc.message)}"
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _error_for(Reply(code=exc.code, text=_one_line(exc.message)))
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, ssl.SSLError)):
        return _unreachable(exc, upstream)
    if isinstance(exc, ValueError):
        return PermanentDeliveryError(553, f"5.1.3 {_one_line(str(exc))}")
    return exc


async def _send(
    client: aiosmtplib.SMTP,
    mail_from: str,
    rcpt_tos: Sequence[str],
    payload: Payload,
    mail_options: Sequence[str],
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """One transaction, as aiosmtplib's `sendmail` makes it, but with the message
    already in its wire form: the refused recipients and the reply to the data."""
    options = _mail_options(client, mail_options)
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    if client.supports_extension("size"):
        options.insert(0, f"SIZE={payload.size}")
    await client.mail(mail_from, options=options, encoding=encoding)
    refused: dict[str, aiosmtplib.SMTPResponse] = {}
    for rcpt in rcpt_tos:
        try:
            await client.rcpt(rcpt, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            refused[rcpt] = aiosmtplib.SMTPResponse(exc.code, exc.message)
    if len(refused) == len(rcpt_tos):
        raise RecipientsRefused(
            {rcpt: Reply(code=r.code, text=_one_line(r.message)) for rcpt, r in refused.items()}
        )
    reply = await client.execute_command(b"DATA")
    if reply.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    # Written and awaited with no step between, as aiosmtplib's own DATA does: the
    # reply is expected from the moment the data is written.
    protocol.write(payload.data)
    reply = await protocol.read_response(timeout=client.timeout)
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return refused, reply.message


def _mail_options(client: aiosmtplib.SMTP, requested: Sequence[str]) -> list[str]:
    """The client's MAIL parameters that still hold for the upstream. SIZE is left out
    (the relay changed the size; aiosmtplib sends the right one). 8BITMIME is dropped
    when the upstream lacks it, as Postfix does; SMTPUTF8 cannot be, so such mail is
    refused rather than silently mangled."""
    options = [o.upper() for o in requested if o.upper() in _PASSED_MAIL_OPTIONS]
    if "SMTPUTF8" in options and not client.supports_extension("smtputf8"):
        raise PermanentDeliveryError(
            554, "5.6.7 upstream does not support SMTPUTF8, which this message needs"
        )
    if "BODY=8BITMIME" in options and not client.supports_extension("8bitmime"):
        options.remove("BODY=8BITMIME")
    return options


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _error_for(reply: Reply) -> TemporaryDeliveryError | PermanentDeliveryError:
    if 500 <= reply.code < 600:
        return PermanentDeliveryError(reply.code, reply.text)
    return TemporaryDeliveryError(reply.code, reply.text)


class MaildirTransport:
    """Delivers into a Maildir (`new/`), one file per recipient, as a local MDA would:
    written in `tmp/`, fsync'd, renamed into `new/`, with `Return-Path:` and
    `Delivered-To:` added on top."""

    _counter = itertools.count()

    def __init__(self, path: Path) -> None:
        self._path = path
        self._hostname = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def describe(self) -> str:
        return f"maildir:{self._path}"

    def prepare(self, content: bytes) -> Payload:
        return Payload(content, len(content))

    async def send(
        self,
        *,
        mail_from: str,
        rcpt_tos: Sequence[str],
        payload: Payload,
        mail_options: Sequence[str],
    ) -> SendResult:
        try:
            names = await asyncio.to_thread(self._deliver, mail_from, rcpt_tos, payload.data)
        except OSError as exc:
            raise TemporaryDeliveryError(
                451, f"4.3.0 cannot write to Maildir {self._path}: {exc.strerror or exc}"
            ) from None
        return SendResult(reply=Reply(code=250, text=f"2.0.0 Ok: {' '.join(names)}"))

    def _deliver(self, mail_from: str, rcpt_tos: Sequence[str], content: bytes) -> list[str]:
        tmp, new = self._path / "tmp", self._path / "new"
        for folder in (tmp, new, self._path / "cur"):
            folder.mkdir(parents=True, exist_ok=True)
        names = []
        for rcpt in rcpt_tos:
            now = time.time()
            name = (
                f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}"
                f"Q{next(self._counter)}.{self._hostname}"
            )
            envelope = f"Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n"
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, envelope.encode("utf-8"))
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp / name, new / name)
            names.append(name)
        dir_fd = os.open(new, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return names

    async def check(self) -> str:
        if (blocking := blocking_folder(self._path)) is not None:
            raise TemporaryDeliveryError(
                451,
                f"4.3.0 cannot write to Maildir {self._path} "
                f"({blocking} is not a writable folder)",
            )
        return "can be written"

    async def close(self) -> None:
        """Nothing to release."""
