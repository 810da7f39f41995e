"""The intake's listener: the relay's SMTP server (its limits, its smuggling defences),
on `[intake] listen`, with no accounts; STARTTLS with the relay's certificate when it
has one."""

from __future__ import annotations

import dataclasses

from pixelpost.config import Config, IntakeConfig
from relay.frontdoor.server import RelayServer
from relay.intake.handler import IntakeHandler


def intake_server(config: Config, intake: IntakeConfig, handler: IntakeHandler) -> RelayServer:
    """A listener for `handler` with the intake's limits and the relay's host name."""
    listening = dataclasses.replace(
        config.relay,
        listen=intake.listen,
        max_message_bytes=intake.max_message_bytes,
        allow_networks=(),
        users=(),
        tls=dataclasses.replace(config.relay.tls, listen_tls=None) if config.relay.tls else None,
        max_connections=intake.max_connections,
        max_connections_per_ip=intake.max_connections_per_ip,
        timeout=intake.timeout,
        bare_newlines="normalize",
        proxy_protocol=intake.proxy_protocol,
        http_listen=None,
    )
    return RelayServer(config=listening, handler=handler, name="intake")
