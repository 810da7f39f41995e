"""A real SMTP server (aiosmtpd) standing in for the upstream MTA in tests.

It records what it receives, and can be told to refuse recipients, answer DATA with a
given reply, or hold DATA until released. Waiting uses a condition variable so that
tests in the event loop's thread and in another thread can both wait on it.
`ThreadedSMTP` serves any handler from a thread of its own, for code that is not async
(the end-to-end tests, and the crash scenario that bench/crash.py runs too).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Arrival:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool


@dataclass
class SinkHandler:
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    data_replies: dict[str, str] = field(default_factory=dict)
    """A reply to DATA for messages to a given recipient (before `data_reply`)."""
    hold: threading.Event | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    rcpt_attempts: list[str] = field(default_factory=list)
    """Every address given in RCPT TO, accepted or not."""
    data_attempts: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_attempts.append(address)
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._changed:
            self.data_attempts += 1
            self._changed.notify_all()
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait, 30)
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.data_replies:
                return self.data_replies[rcpt]
        if self.data_reply is not None:
            return self.data_reply
        assert envelope.original_content is not None
        assert envelope.mail_from is not None
        with self._changed:
            self.arrivals.append(
                Arrival(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    content=envelope.original_content,
                    mail_options=list(envelope.mail_options),
                    tls=session.ssl is not None,
                )
            )
            self._changed.notify_all()
        return "250 2.0.0 Ok: sunk"

    def wait_for(self, count: int, timeout: float = 10.0, *, attempts: bool = False) -> None:
        """Block until `count` messages arrived (or DATA was attempted `count` times)."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (self.data_attempts if attempts else len(self.arrivals)) >= count,
                timeout,
            )
        if not done:
            raise AssertionError(f"sink: expected {count}, got {len(self.arrivals)} messages")

    async def wait(self, count: int, *, within: float = 10.0, attempts: bool = False) -> None:
        await asyncio.to_thread(self.wait_for, count, within, attempts=attempts)


class ThreadedSMTP:
    """Serves `handler` on 127.0.0.1, a free port, on an event loop of its own in a
    thread; `options` go to aiosmtpd's SMTP."""

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


class ThreadedSink(ThreadedSMTP):
    """A sink on its own event loop in a thread, for tests that are not async (the
    end-to-end tests, which drive pixelpost in a subprocess)."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        super().__init__(self.handler, hostname="sink.test", enable_SMTPUTF8=True)
