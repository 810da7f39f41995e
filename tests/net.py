"""Network helpers for tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (for configurations that must name one, such as a
    tracker's public URL; everything else binds port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
