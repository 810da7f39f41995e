"""Who is asking: the client's address behind trusted proxies, optionally anonymized."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pixelpost.config import IPNetwork


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]
) -> bool:
    return any(address in network for network in trusted)


def is_trusted(peer: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Whether the peer is one of the trusted proxies, whose X-Forwarded-* headers are
    believed."""
    address = _address(peer or "")
    return address is not None and _trusted(address, trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    nearest address in X-Forwarded-For that is not a trusted proxy itself (reading it
    right to left, as each proxy appends the address it saw)."""
    peer_address = _address(peer or "")
    if peer_address is None:
        return peer or ""
    if not forwarded_for or not _trusted(peer_address, trusted):
        return str(peer_address)
    nearest = peer_address
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            break  # garbage: believe no further than the last hop that made sense
        nearest = address
        if not _trusted(address, trusted):
            break
    return str(nearest)


def anonymize(ip: str) -> str:
    """The address with its host part zeroed: IPv4 to /24, IPv6 to /48."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
