"""Network helpers for tests."""

from __future__ import annotations

import socket
import ssl

BALANCER = "127.0.0.9"
"""A load balancer's own address, which tests put in the relay's allow_networks (as
HAProxy on the relay's host is) while the clients it speaks for are outside them."""
UNVERIFIED_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
"""A client context for servers with the tests' throwaway certificates (not the subject
of the tests using it). Made once: loading the system's CAs costs 20 to 50 ms."""
UNVERIFIED_TLS.check_hostname = False
UNVERIFIED_TLS.verify_mode = ssl.CERT_NONE


def free_port() -> int:
    """A port nothing listens on now (for configurations that must name one, such as a
    tracker's public URL; everything else binds port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
