"""Parsers for the value syntaxes configuration uses: durations, host:port, networks,
URLs and `${ENV}` references.

Each parser takes a string and returns the value or raises ValueError with a message
that reads well after "key: value is not …"; the loader adds the key and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostPort:
    """An address to listen on or connect to."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_count(text: str, *, low: int, high: int) -> int:
    """A whole number from `low` to `high`, in ASCII digits; ValueError otherwise.
    (`str.isdigit` takes "²", which `int` refuses, and `int` refuses 4,300 digits.)"""
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > len(str(high))
        or not low <= int(text) <= high
    ):
        raise ValueError(f"not a number from {low} to {high}")
    return int(text)


def parse_duration(text: str) -> float:
    """Seconds in `"500ms"`, `"30s"`, `"5m"`, `"2h"` or `"2d"`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError('not a duration (write it like "500ms", "30s", "5m", "2h" or "2d")')
    return float(match[1]) * _DURATION_UNITS[match[2]]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration in configuration syntax."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def format_span(seconds: float) -> str:
    """A rough length of time, for people: `2d 3h`, `4m 10s`, `3s`."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def parse_host_port(text: str) -> HostPort:
    """`host:port` or `[ipv6]:port`; port 0 asks the system for a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("not a host:port (write it like 127.0.0.1:2525 or [::1]:2525)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("not a host:port (write an IPv6 address in brackets: [::1]:2525)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("not a host:port (the port must be a number from 0 to 65535)")
    if not re.fullmatch(r"[A-Za-z0-9.\-_:%]+", host):
        raise ValueError(f"not a host:port ({host!r} is not a host name or address)")
    return HostPort(host=host, port=int(port_text))


def parse_network(text: str) -> IPNetwork:
    """An IPv4 or IPv6 network in CIDR notation; a bare address is a /32 or /128."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"not a network ({exc})") from None


def parse_http_url(text: str) -> str:
    """An absolute http or https URL, returned without a trailing slash."""
    if not text.isascii() or any(c in text for c in " \"'<>\\"):
        raise ValueError("not a plain ASCII URL (write an international domain in its xn-- form)")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("a base URL takes no query or fragment")
    return text.rstrip("/")


def interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace `${NAME}` and `${NAME:-fallback}` with values from `environ`.

    Returns the result and the names of referenced variables that are not set (and have
    no fallback); the caller reports those against the key.
    """
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, fallback = match[1], match[2]
        if name in environ:
            return environ[name]
        if fallback is not None:
            return fallback
        missing.append(name)
        return ""

    if "${" not in text:
        return text, missing
    return _ENV_REFERENCE.sub(replace, text), missing


TOKEN_SCHEMES = frozenset(("nats", "tls"))
"""Schemes whose user part, given without a password, is a token (NATS's token login)."""


def describe_url(url: str) -> str:
    """`url` without its password (and without a query, which may carry one), for
    messages and logs: `amqp://guest@127.0.0.1:5672/`. A NATS token, written where a
    user name goes, is a password too: `nats://***@127.0.0.1:4222`."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<a malformed URL>"
    user = f"{parts.username}@" if parts.username else ""
    if parts.username and parts.password is None and parts.scheme in TOKEN_SCHEMES:
        user = "***@"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
