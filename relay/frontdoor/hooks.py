"""What the relay's and the intake's aiosmtpd handlers share: the greeting, the PROXY
header, adding a recipient, and keeping count of the messages being taken in, so that a
stop can wait for them.

A handler subclasses `Hooks` and writes `take`: what to do with a whole message, and
the reply to give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import replies


class Hooks:
    """aiosmtpd's EHLO, PROXY and DATA hooks, and `drain` for `RelayServer.stop`."""

    def __init__(self) -> None:
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd lists AUTH after TLS even with no mechanism left (no accounts).
        return [line for line in responses if line.rstrip() != replies.AUTH_WITHOUT_MECHANISMS]

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: ProxyData
    ) -> bool:
        """Called only behind a load balancer (proxy_protocol): the real client is the
        PROXY header's (see `relay.frontdoor.server`)."""
        proxied: Callable[[ProxyData], Awaitable[bool]] | None = getattr(server, "proxied", None)
        return await proxied(proxy_data) if proxied is not None else False

    @staticmethod
    def add_recipient(
        envelope: Envelope, address: str, rcpt_options: list[str], *, limit: int
    ) -> str:
        """Add a recipient that passed the handler's checks: once (a second RCPT for
        it is taken and ignored, as Postfix's duplicate filter does), and no more than
        `limit` (452: the client sends the rest in another transaction)."""
        if address in envelope.rcpt_tos:
            return replies.RECIPIENT_OK
        if len(envelope.rcpt_tos) >= limit:
            return replies.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            return await self.take(session, envelope)
        finally:
            self._in_flight.discard(task)

    async def take(self, session: Session, envelope: Envelope) -> str:
        """Take a whole message in; the reply to give the client."""
        raise NotImplementedError

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` seconds for messages being taken in; False if some are
        still going when it runs out."""
        if not self._in_flight:
            return True
        _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
        return not pending
