"""When to try a failed delivery again: the destination's schedule, with jitter, and
the endpoint's Retry-After when it asks for longer."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
"""Each delay is drawn from ±20 % of the schedule's, so that retries after an outage do
not arrive all at once."""
RETRY_AFTER_LIMIT = 86400.0


def next_delay(
    failures: int,
    delays: Sequence[float],
    *,
    retry_after: float | None = None,
    rng: random.Random,
) -> float | None:
    """Seconds until the next attempt after `failures` failed ones; None when the
    schedule is spent (the delivery becomes a dead letter)."""
    if failures > len(delays):
        return None
    delay = delays[failures - 1] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_LIMIT))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
