"""The tracker's pure helpers: client address, anonymization, retry schedule, Location,
the wrong-token throttle, sessions, connection limits and bad-request lines."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest
from aiohttp.http_exceptions import BadStatusLine, LineTooLong

from pixelpost.core.retry import next_delay, parse_retry_after
from pixelpost.core.throttle import Throttle
from tests.clock import Clock
from tracker.auth import SESSION_SECONDS, SESSIONS_KEPT, Access
from tracker.client import anonymize, client_ip, is_trusted
from tracker.server import BAD_REQUEST_SHOWN, describe_bad_request
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


def test_is_trusted() -> None:
    assert is_trusted("127.0.0.1", TRUSTED)
    assert is_trusted("::ffff:10.1.2.3", TRUSTED)
    assert not is_trusted("203.0.113.5", TRUSTED)
    assert not is_trusted(None, TRUSTED)
    assert not is_trusted("garbage", TRUSTED)


def test_the_throttle_counts_attempts_in_flight_and_failures_per_client() -> None:
    clock = Clock(1000.0)
    throttle = Throttle(per_client=3, in_all=100, window=300, clock=clock)
    assert [throttle.start("a") for _ in range(3)] == [None] * 3
    assert throttle.start("a") == 1  # three in flight: wait for their answers
    assert throttle.start("b") is None  # another client is not held up
    throttle.finish("b", failed=False)
    for _ in range(3):
        throttle.finish("a", failed=True)
    clock.now += 100
    assert throttle.start("a") == 200  # until the first failure is 300 s old
    clock.now += 200
    assert throttle.start("a") is None
    throttle.finish("a", failed=False)  # the right token forgets the failures
    assert [throttle.start("a") for _ in range(3)] == [None] * 3


def test_the_throttle_bounds_every_client_together() -> None:
    clock = Clock(1000.0)
    throttle = Throttle(per_client=5, in_all=4, window=60, clock=clock)
    for client in ("a", "b", "c", "d"):
        assert throttle.start(client) is None
        throttle.finish(client, failed=True)
    assert throttle.start("e") == 60
    clock.now += 60
    assert throttle.start("e") is None


def test_each_session_is_its_own_and_ends_at_sign_out() -> None:
    clock = Clock(1_700_000_000)
    access = Access("token-token-token-token", clock=clock)
    first, second = access.new_session(), access.new_session()
    assert first != second
    assert access.session_valid(first)
    assert access.session_valid(second)
    access.end_session(first)
    assert not access.session_valid(first)
    assert access.session_valid(second)
    # Changing the token ends every session; a forged MAC or id is nothing.
    assert not Access("another-token-another-token", clock=clock).session_valid(second)
    expires, session_id, mac = second.split(".")
    assert not access.session_valid(f"{expires}.{session_id}x.{mac}")
    assert not access.session_valid(f"{int(expires) + 1}.{session_id}.{mac}")
    clock.now += SESSION_SECONDS
    assert not access.session_valid(second)


def test_sessions_are_bounded_oldest_out_first() -> None:
    access = Access("token-token-token-token", clock=Clock(1_700_000_000))
    oldest = access.new_session()
    newer = [access.new_session() for _ in range(SESSIONS_KEPT)]
    assert not access.session_valid(oldest)
    assert all(access.session_valid(value) for value in (newer[0], newer[-1]))


def test_a_bad_request_is_described_on_one_bounded_line() -> None:
    described = describe_bad_request(BadStatusLine("GET /\x00 HTTP/1.1\n\n  ^"))
    assert "\n" not in described
    long = describe_bad_request(LineTooLong("a" * 10_000, "8190"))
    assert len(long) == BAD_REQUEST_SHOWN
    assert long.endswith("…")
