"""The tracker's pure helpers: client address, anonymization, retry schedule, Location."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest

from tracker.client import anonymize, client_ip
from tracker.retry import next_delay, parse_retry_after
from tracker.views import PIXEL, location

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # an untrusted peer's XFF is a lie
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # through two proxies
        ("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", "198.51.100.1"),  # spoofed left part
        ("127.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "192.0.2.9:5555", "192.0.2.9"),
        ("::ffff:127.0.0.1", "192.0.2.9", "192.0.2.9"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_ip(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_anonymize() -> None:
    assert anonymize("198.51.100.77") == "198.51.100.0"
    assert anonymize("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert anonymize("not an ip") == "not an ip"


def test_retry_schedule_with_jitter_and_end() -> None:
    rng = random.Random(7)
    delays = (5.0, 300.0, 1800.0)
    seen = [next_delay(n, delays, rng=rng) for n in (1, 2, 3)]
    for got, base in zip(seen, delays, strict=True):
        assert got is not None
        assert base * 0.8 <= got <= base * 1.2
    assert next_delay(4, delays, rng=rng) is None
    samples = {next_delay(1, delays, rng=rng) for _ in range(20)}
    assert len(samples) > 10  # jitter spreads the retries


def test_retry_after_asks_for_longer_never_shorter() -> None:
    rng = random.Random(1)
    longer = next_delay(1, (5.0,), retry_after=120.0, rng=rng)
    assert longer == 120.0
    shorter = next_delay(1, (300.0,), retry_after=1.0, rng=rng)
    assert shorter is not None
    assert shorter >= 240
    assert next_delay(1, (5.0,), retry_after=10**9, rng=rng) == 86400.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Sun, 29 Nov 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_pixel_is_a_43_byte_gif() -> None:
    assert len(PIXEL) == 43
    assert PIXEL.startswith(b"GIF89a\x01\x00\x01\x00")


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("https://example.com/a?b=1&c=%20", "https://example.com/a?b=1&c=%20"),
        ("https://example.com/café ü", "https://example.com/caf%C3%A9%20%C3%BC"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("https://user@bücher.example:8443/", "https://user@xn--bcher-kva.example:8443/"),
    ],
)
def test_location_header(url: str, header: str) -> None:
    assert location(url) == header
    assert location(url).isascii()
