"""A bare asyncio SMTP client for the benchmarks that drive the relay session by session
(bench/memory.py, bench/fanout.py): each reply is read and checked, and a refusal is
raised as `Refused` with the server's words, never retried or hidden, so that the
benchmark can count it."""

from __future__ import annotations

import asyncio
import contextlib
import re

REPLY_TIMEOUT = 600.0
"""Seconds a reply may take; a relay that takes longer has failed the benchmark."""
QUIT_TIMEOUT = 5.0


class Refused(Exception):
    """The server answered other than expected, or closed the connection; the message is
    its reply."""


def data_payload(message: bytes) -> bytes:
    """The message as sent after DATA: CRLF lines, dot-stuffed, with the final dot."""
    lines = re.sub(rb"\r?\n", b"\r\n", message)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", lines) + b".\r\n"


class Session:
    """One SMTP session on 127.0.0.1, greeted and past EHLO (see `Session.open`)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = reply_timeout

    @classmethod
    async def open(cls, port: int, *, reply_timeout: float = REPLY_TIMEOUT) -> Session:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = cls(reader, writer, reply_timeout=reply_timeout)
        try:
            await session.reply(220)
            await session.command(b"EHLO client.bench", 250)
        except BaseException:
            await session.close(quit=False)
            raise
        return session

    async def reply(self, expected: int) -> str:
        """The server's reply (its last line); `Refused` unless its code is `expected`."""
        while True:
            line = await asyncio.wait_for(self._reader.readline(), self._timeout)
            if not line:
                raise Refused(f"connection closed, expecting {expected}")
            if line[3:4] != b"-":
                break
        text = line.decode(errors="replace").strip()
        if line[:3] != str(expected).encode():
            raise Refused(text)
        return text

    async def command(self, line: bytes, expected: int) -> str:
        self.write(line)
        return await self.reply(expected)

    def write(self, line: bytes) -> None:
        """Send a command without waiting for its reply (`reply` reads it later)."""
        self._writer.write(line + b"\r\n")

    async def send(self, payload: bytes) -> None:
        """Hand `payload` (see `data_payload`) to the connection, up to its last bytes."""
        self._writer.write(payload)
        await self._writer.drain()

    async def close(self, *, quit: bool = True) -> None:
        """QUIT (unless the session is known to be broken) and close, quietly: what
        went wrong before was already counted."""
        if quit:
            with contextlib.suppress(Refused, OSError, TimeoutError):
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await self.command(b"QUIT", 221)
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
