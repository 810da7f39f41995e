"""Assembles the relay and the tracker from the configuration and runs them on one event
loop until SIGINT or SIGTERM, then shuts them down in order.

This is the composition root: the one place that knows every concrete collaborator.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TextIO

from pixelpost import __version__
from pixelpost.config import Config
from pixelpost.events import LoggingEventSink
from pixelpost.keys import decode_signing_key, signing_keys
from pixelpost.tokens import TokenCodec
from relay.access import AccessPolicy
from relay.delivery import ForwardingDelivery
from relay.handler import RelayHandler
from relay.server import RelayServer
from relay.upstream import open_transport
from tracker.app import create_app
from tracker.server import TrackerServer

log = logging.getLogger(__name__)


def _banner(config: Config, lines: list[tuple[str, str]]) -> str:
    source = (
        str(config.source) if config.source else "built-in defaults (no -c, no ./pixelpost.toml)"
    )
    width = max(len(label) for label, _ in lines)
    body = "\n".join(f"  {label.ljust(width)}  {value}" for label, value in lines)
    return f"pixelpost {__version__} running with {source}\n{body}\nPress Ctrl-C to stop.\n"


async def run(
    config: Config,
    *,
    relay: bool = True,
    tracker: bool = True,
    out: TextIO = sys.stdout,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run the chosen services until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    keys = signing_keys(config.signing.keys, config.signing.key_file)
    codec = TokenCodec([decode_signing_key(key) for key in keys])
    lines: list[tuple[str, str]] = []
    relay_server: RelayServer | None = None
    tracker_server: TrackerServer | None = None
    transport = open_transport(config.upstream, local_hostname=config.relay.hostname)
    try:
        if relay:
            handler = RelayHandler(
                config=config,
                access=AccessPolicy(allow_networks=config.relay.allow_networks),
                delivery=ForwardingDelivery(transport=transport),
                codec=codec,
                events=LoggingEventSink(),
            )
            relay_server = RelayServer(config=config.relay, handler=handler)
            await relay_server.start()
            lines += [("smtp", str(relay_server.address)), ("upstream", transport.describe())]
        if tracker:
            tracker_server = TrackerServer(app=create_app(config), listen=config.tracker.listen)
            await tracker_server.start()
            lines += [
                ("http", f"http://{tracker_server.address}"),
                ("links", config.tracker.public_url),
            ]
        lines += [("store", config.store.url if config.store.kind == "sqlite" else "postgresql")]
        if not config.signing.keys:
            lines.append(("signing key", str(config.signing.key_file)))
        out.write(_banner(config, lines))
        out.flush()
        if ready is not None:
            ready()
        await stop.wait()
        log.info("stopping (signal received)")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if relay_server is not None:
            await relay_server.stop()
        if tracker_server is not None:
            await tracker_server.stop()
        await transport.close()
    out.write("pixelpost stopped\n")
    out.flush()
