"""The limit on repeated log lines."""

from __future__ import annotations

from pixelpost.logs import LogEvery


def test_a_repeated_line_is_let_through_once_per_interval_with_a_count() -> None:
    now = [0.0]
    every = LogEvery(10, clock=lambda: now[0])
    assert every.due() == ""
    assert every.due() is None
    assert every.due() is None
    now[0] = 10
    assert every.due() == " (2 more since the last such line)"
    now[0] = 25
    assert every.due() == ""
