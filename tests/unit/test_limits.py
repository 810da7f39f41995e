"""Connection limits, shared by the relay and the tracker."""

from __future__ import annotations

from pixelpost.core.limits import TOO_MANY, TOO_MANY_FROM_CLIENT, ConnectionLimits


def test_per_client_and_in_all_with_exempt_clients() -> None:
    limits = ConnectionLimits(total=3, per_client=1, exempt=lambda c: c.startswith("10."))
    assert limits.admit("203.0.113.5") is None
    assert limits.admit("203.0.113.5") == TOO_MANY_FROM_CLIENT
    assert limits.admit("10.0.0.1") is None  # a trusted proxy: only the total counts
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("198.51.100.1") == TOO_MANY
    limits.release("10.0.0.1")
    assert limits.admit("198.51.100.1") is None
    limits.release("203.0.113.5")
    assert limits.admit("203.0.113.5") is None  # its one connection went: another may come
    assert limits.count == 3


def test_a_connection_whose_client_is_known_later() -> None:
    """A balancer's connection counts in all until its PROXY header names the client."""
    limits = ConnectionLimits(total=10, per_client=1)
    assert limits.admit(None) is None
    assert limits.admit(None) is None
    assert limits.count == 2
    assert limits.identify("203.0.113.5") is None
    assert limits.identify("203.0.113.5") == TOO_MANY_FROM_CLIENT  # and released
    assert limits.count == 1
    limits.release("203.0.113.5")
    assert limits.count == 0
