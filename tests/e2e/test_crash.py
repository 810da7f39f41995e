"""Issue 5's acceptance: SIGKILL in the middle of a 2,000-message load loses nothing.

The scenario is `tests/crash.py`'s; `bench/crash.py` runs it for the figure in
docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

from tests.crash import run

CONCURRENCY = 20
"""relay.concurrency's default: at most this many deliveries were cut off by the kill."""


def test_sigkill_mid_load_loses_no_accepted_message(tmp_path: Path) -> None:
    report = run(tmp_path, messages=2000, kill_after=800, sessions=10)

    print(report.summary())
    assert report.accepted_before_kill >= 800
    assert len(report.accepted) >= 2000 - 10  # at most one unanswered message per session
    assert report.lost == set()
    assert set(report.arrivals) <= report.accepted | report.in_flight
    assert report.duplicates <= CONCURRENCY
