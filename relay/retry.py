"""When a deferred message is tried again."""

from __future__ import annotations

import random
from collections.abc import Sequence

RETRY_JITTER = 0.1


def next_attempt_at(
    *,
    attempts: int,
    delays: Sequence[float],
    now: float,
    expires_at: float,
    rng: random.Random,
) -> float:
    """When to try again after the `attempts`-th deferral: the matching delay (the last
    one repeats), give or take 10% so that a burst of deferrals does not come back as
    one, and never after the message expires (it is tried once more, then bounced)."""
    delay = delays[min(attempts, len(delays)) - 1]
    delay *= rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return min(now + delay, expires_at)
