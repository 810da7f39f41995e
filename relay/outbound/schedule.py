"""When each waiting message of the spool is due for its next attempt.

Pure bookkeeping, no I/O and no clock of its own: the runner (`relay.outbound.runner`)
asks it what is due at the time it reads, and wakes itself when `Schedule.at` says that
something moved.
"""

from __future__ import annotations

import heapq


class Schedule:
    """The messages waiting for an attempt, each with when it is due.

    A heap of (due, id), and each id's due time: moving a message sooner pushes a new
    entry rather than searching the heap, and the entry it supersedes is skipped when it
    comes up (a flush, or a message's arrival, moves many messages at once)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._due

    def at(self, message_id: str, due: float) -> bool:
        """Have the message tried at `due`, unless it is due by then already; returns
        whether that moved it (and the runner should look again)."""
        if self._due.get(message_id, float("inf")) <= due:
            return False
        self._due[message_id] = due
        heapq.heappush(self._heap, (due, message_id))
        return True

    def pop_due(self, now: float) -> str | None:
        """Take the message due first, if it is due at `now`; None if none is."""
        while self._heap and self._heap[0][0] <= now:
            due, message_id = heapq.heappop(self._heap)
            if self._due.get(message_id) != due:
                continue  # superseded by a later entry
            del self._due[message_id]
            return message_id
        return None

    @property
    def next_due(self) -> float | None:
        """When the first entry is due; None when there is none. It may be one a later
        entry superseded: the runner then wakes early, skips it, and waits again."""
        return self._heap[0][0] if self._heap else None
