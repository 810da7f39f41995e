"""A clock for the code that takes one (`clock=`): it stands still until the test moves
it, so that a test shows what happens a minute later, or that nothing happens before
then, without waiting for it."""

from __future__ import annotations

import time


class Clock:
    """Seconds as `time.time` gives them, from `now` (the real time when made, unless
    given), moved on only by the test (`clock.now += 60`)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now
