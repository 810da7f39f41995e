"""Who may relay through pixelpost: clients in `relay.allow_networks`, or clients that
authenticated. Everyone else is refused at RCPT, as Postfix's `permit_mynetworks,
permit_sasl_authenticated, reject` does, so pixelpost is never an open relay."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pixelpost.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(peer: object) -> IPAddress | None:
    """The IP address of an aiosmtpd `session.peer`; IPv4-mapped IPv6 becomes IPv4.
    None for a peer without one (a Unix socket)."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def format_peer(peer: object) -> str:
    """`host:port` of an aiosmtpd `session.peer`, for log lines."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


class AccessPolicy:
    """Decides whether a client may relay."""

    def __init__(self, *, allow_networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(allow_networks)

    def in_allowed_network(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in net for net in self._networks)

    def may_relay(self, *, address: IPAddress | None, authenticated: bool) -> bool:
        return authenticated or self.in_allowed_network(address)
