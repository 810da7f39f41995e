"""When to try a failed delivery again: one schedule, with jitter, for the relay's spool
(`next_attempt_at`) and the tracker's outbox (`next_delay`), and the Retry-After header
an endpoint may answer with. Pure: the caller passes the clock's reading and the random
source."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, overload

OUTBOX_JITTER = 0.2
"""An event's retry is drawn from ±20 % of the schedule's delay, so that the retries
after a webhook's outage do not arrive all at once."""
SPOOL_JITTER = 0.1
"""A message's retry is drawn from ±10 % of the schedule's delay, so that a burst of
deferrals does not come back as one."""
RETRY_AFTER_LIMIT = 86400.0
"""The longest wait a Retry-After header is obeyed for."""


@overload
def next_delay(
    failures: int,
    delays: Sequence[float],
    *,
    repeat_last: Literal[True],
    jitter: float = ...,
    retry_after: float | None = ...,
    rng: random.Random,
) -> float: ...


@overload
def next_delay(
    failures: int,
    delays: Sequence[float],
    *,
    repeat_last: bool = ...,
    jitter: float = ...,
    retry_after: float | None = ...,
    rng: random.Random,
) -> float | None: ...


def next_delay(
    failures: int,
    delays: Sequence[float],
    *,
    repeat_last: bool = False,
    jitter: float = OUTBOX_JITTER,
    retry_after: float | None = None,
    rng: random.Random,
) -> float | None:
    """Seconds until the next attempt after `failures` failed ones: the matching delay,
    give or take `jitter`, and no sooner than `retry_after` asks (up to a day). Past the
    end of `delays` the last one repeats, or with `repeat_last` false the schedule is
    spent: None (the outbox's delivery becomes a dead letter)."""
    if failures > len(delays):
        if not repeat_last:
            return None
        failures = len(delays)
    delay = delays[failures - 1] * rng.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_LIMIT))
    return delay


def next_attempt_at(
    *,
    attempts: int,
    delays: Sequence[float],
    now: float,
    expires_at: float,
    rng: random.Random,
) -> float:
    """When to try a spooled message again after its `attempts`-th deferral: on the
    schedule, the last delay repeating, and never after the message expires (it is tried
    once more then, and bounced)."""
    delay = next_delay(attempts, delays, repeat_last=True, jitter=SPOOL_JITTER, rng=rng)
    return min(now + delay, expires_at)


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
