"""What every destination's sender is: it takes a batch of claimed events and says, for
each, whether it was delivered, failed (and may be retried, perhaps after a
Retry-After), was refused for good by an endpoint that is gone (HTTP 410), or could not
be offered at all because the destination is unavailable (a broker that cannot be
reached, an SNS subscription not confirmed yet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pixelpost.store import Claimed


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What became of one delivery attempt."""

    delivered: bool
    error: str = ""
    retry_after: float | None = None
    gone: bool = False
    unavailable: bool = False
    """The destination could not be reached at all: no fault of the event's, so no
    attempt is counted (an outage never makes dead letters); the destination is
    claimed from again after `retry_after` seconds."""


UNAVAILABLE_PAUSE = 5.0
"""How long an unavailable destination is left alone when its sender names no time."""


def unavailable(error: str, retry_after: float | None = None) -> Outcome:
    """The outcome of every event of a batch offered to a destination that cannot take
    it now."""
    return Outcome(delivered=False, error=error, retry_after=retry_after, unavailable=True)


DELIVERED = Outcome(delivered=True)

HTTP_REQUESTS_IN_FLIGHT = 8
"""Requests in flight to one HTTP endpoint (webhook, sns)."""
HTTP_BATCH = 8
"""Events an HTTP sender takes per claim, POSTed side by side; two batches are out at
once, so a claim and the record of what was delivered serve eight events, not one,
while no more than HTTP_REQUESTS_IN_FLIGHT requests are open."""
HTTP_BATCHES = 2


class Sender(Protocol):
    """Delivers batches of events to one destination."""

    name: str
    concurrency: int
    batch_size: int
    retry_delays: tuple[float, ...]
    lease: float
    """How long a claimed batch stays hidden from other claims: longer than an attempt."""

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]: ...

    async def close(self) -> None:
        """Let go of connections; called once, when no delivery is in flight."""
