"""Reading the message that follows DATA, a buffer at a time instead of a line at a time.

aiosmtpd reads DATA with one `readuntil(b"\\r\\n")` per line and keeps every line as a
`bytearray` until the end: for a 100 KB newsletter that is 1,500 awaits, and a message
costs about three times its size in memory. This reader searches the stream for the
end-of-data marker in whole buffers and keeps one growing `bytearray`.

The rules stay RFC 5321's and aiosmtpd's (section 4.5.2, and CVE-2024-27305): only
`<CRLF>.<CRLF>` ends the message, never a bare LF or CR around the dot; a line that
starts with a dot loses that dot; what the client pipelined after the end stays in the
stream for the next command. A message over the size limit is read to its end and
discarded, so that the reply (552) comes in step with the client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

LARGE_MESSAGE = 1024 * 1024
"""Messages larger than this are "large": the relay lets only a few of them in at once."""
END = b"\r\n.\r\n"
"""The end-of-data marker: a line holding only a dot."""
_LAST_LINE = b".\r\n"


class TooMuchData(Exception):
    """The message is larger than the limit (it was read to its end and dropped)."""


async def read_data(
    reader: asyncio.StreamReader,
    limit: int | None,
    *,
    on_large: Callable[[], Awaitable[None]] | None = None,
    on_oversize: Callable[[], None] | None = None,
) -> bytes:
    """The message up to the end-of-data line, dot-unstuffed, with its last CRLF.

    `on_large` is awaited once, when the message grows past `LARGE_MESSAGE` bytes: it
    may make the reading wait (the client is held back by TCP meanwhile); `on_oversize`
    is called once, as soon as it is over `limit` (what is left is only drained). Raises
    `TooMuchData` when the message is over `limit` bytes (as sent, before unstuffing),
    `asyncio.IncompleteReadError` when the client goes away first.
    """
    message = _Message(limit=limit, on_oversize=on_oversize)
    if not await _read_first_bytes(reader, message):
        await _read_rest(reader, message, on_large)
    if message.over:
        raise TooMuchData
    data = message.data
    del data[len(data) - len(_LAST_LINE) :]  # the end-of-data line; its CRLF stays
    return _unstuff(bytes(data))


@dataclass(slots=True)
class _Message:
    """The message as read so far, and whether it went over the limit."""

    limit: int | None
    on_oversize: Callable[[], None] | None
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    """Bytes read, as sent: the ones dropped count too."""
    over: bool = False

    def count(self, read: int) -> bool:
        """Count `read` more bytes; whether the message is now over the limit (the first
        time it is, `on_oversize` is called)."""
        self.size += read
        if self.limit is None or self.size <= self.limit + len(END):
            return False
        if not self.over and self.on_oversize is not None:
            self.on_oversize()
        self.over = True
        return True


async def _read_first_bytes(reader: asyncio.StreamReader, message: _Message) -> bool:
    """Read the first bytes one at a time while they could still be the end-of-data
    line: its CRLF is the DATA command's, already read, so the search of `_read_rest`
    cannot see it. Whether the message ended there."""
    while _could_end(message.data):
        message.data += await reader.readexactly(1)
        if (b"\r\n" + message.data[-len(END) :]).endswith(END):
            return True
        if message.count(1):
            del message.data[: -len(END)]  # a message of empty lines: keep only what decides
    return False


async def _read_rest(
    reader: asyncio.StreamReader,
    message: _Message,
    on_large: Callable[[], Awaitable[None]] | None,
) -> None:
    """Read up to the end-of-data marker a buffer at a time. Past the first bytes no
    marker can straddle what was read and what was not: a search that gives up leaves
    its last four bytes in the stream."""
    waited = False
    done = False
    while not done:
        if on_large is not None and not waited and message.size > LARGE_MESSAGE:
            waited = True
            await on_large()
        try:
            chunk = await reader.readuntil(END)
            done = True
        except asyncio.LimitOverrunError as exc:
            # No marker within the stream's limit: take what cannot be part of one.
            chunk = await reader.readexactly(exc.consumed)
        if message.count(len(chunk)):
            message.data = bytearray()  # keep draining, drop what came
        else:
            message.data += chunk


def _could_end(data: bytearray) -> bool:
    """Whether the data read so far, after the DATA command's CRLF, ends in a proper
    beginning of the end-of-data marker."""
    seen = b"\r\n" + data[-len(END) :]
    return any(seen.endswith(END[:n]) for n in range(1, len(END)))


def stuffed(message: bytes) -> bytes:
    """`message`, whose lines end in CRLF (`normalize_newlines`), as DATA carries it: a
    dot doubled where a line starts with one, and the end-of-data line (the inverse of
    what `read_data` does)."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    return message + _LAST_LINE


def _unstuff(data: bytes) -> bytes:
    """Remove the dot that starts a line (RFC 5321 section 4.5.2)."""
    unstuffed = data.replace(b"\r\n.", b"\r\n")
    return unstuffed[1:] if unstuffed.startswith(b".") else unstuffed


_NEWLINE = re.compile(rb"\r\n|\r|\n")


def has_bare_newlines(data: bytes) -> bool:
    """Whether `data` holds a LF or a CR that is not part of a CRLF."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def normalize_newlines(data: bytes) -> bytes:
    """Every bare LF and bare CR made a CRLF, as the message goes on (Postfix's
    `smtpd_forbid_bare_newline = normalize`): parsers and the next hop then agree on
    where lines end, and a smuggled end-of-data is only text."""
    return _NEWLINE.sub(b"\r\n", data) if has_bare_newlines(data) else data


def has_nul(data: bytes) -> bool:
    """Whether `data` holds a NUL, which no message may (RFC 5322 section 2.3, RFC 6152):
    an upstream that drops it would read `<CRLF><NUL>.<CRLF>` as the end of data."""
    return b"\x00" in data


def remove_nul(data: bytes) -> bytes:
    """`data` without its NUL bytes."""
    return data.replace(b"\x00", b"")
