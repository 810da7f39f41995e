"""The baseline proxy: plain aiosmtpd in, aiosmtplib out, nothing else.

    python -m bench.passthrough LISTEN_PORT UPSTREAM_PORT

Each message is forwarded while the client waits, over a new upstream connection, as
the simplest relay written on the same two libraries would do it.
"""

from __future__ import annotations

import asyncio
import sys

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session


class Forward:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None
        assert envelope.original_content is not None
        try:
            await aiosmtplib.send(
                envelope.original_content,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname="127.0.0.1",
                port=self.upstream_port,
                start_tls=False,
            )
        except aiosmtplib.SMTPException as exc:
            return f"451 {exc}"
        return "250 OK"


async def main(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Forward(upstream_port)
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=None, loop=loop), "127.0.0.1", listen_port
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
