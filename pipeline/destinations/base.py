"""What every destination's sender is: it takes a batch of claimed events and says, for
each, whether it was delivered, failed (and may be retried, perhaps after a
Retry-After), or was refused for good by an endpoint that is gone (HTTP 410)."""

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


DELIVERED = Outcome(delivered=True)


class Sender(Protocol):
    """Delivers batches of events to one destination."""

    name: str
    concurrency: int
    batch_size: int
    retry_delays: tuple[float, ...]
    lease: float
    """How long a claimed batch stays hidden from other claims: longer than an attempt."""

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]: ...
