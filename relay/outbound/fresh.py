"""Newly spooled messages kept in memory for their first attempt.

A message the relay just accepted is in the spool already, but its first attempt takes
it (and the tracking plan made while accepting it) from here, so that it is neither read
back from disk nor planned again. What does not fit in `FRESH_BYTES_LIMIT` is read back
from the spool like any other message.
"""

from __future__ import annotations

from dataclasses import dataclass

from pixelpost.core.rewrite import MessagePlan
from relay.outbound.spoolfile import Envelope

FRESH_BYTES_LIMIT = 64 * 1024 * 1024
"""Newly spooled messages kept in memory for their first attempt, in bytes."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Fresh:
    """A newly spooled message as it was accepted."""

    envelope: Envelope
    content: bytes
    plan: MessagePlan | None


class FreshMessages:
    """The newly spooled messages held in memory, within `FRESH_BYTES_LIMIT`."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Fresh, int]] = {}
        self._bytes = 0

    def keep(self, envelope: Envelope, content: bytes, plan: MessagePlan | None) -> None:
        """Hold a message for its first attempt, as long as few enough bytes are held."""
        size = len(content) * (2 if plan is not None else 1)  # a plan holds the HTML decoded
        if self._bytes + size <= FRESH_BYTES_LIMIT:
            self._held[envelope.id] = (Fresh(envelope=envelope, content=content, plan=plan), size)
            self._bytes += size

    def take(self, message_id: str) -> Fresh | None:
        """The message, no longer held; None if it is not (or no longer) held."""
        found = self._held.pop(message_id, None)
        if found is None:
            return None
        self._bytes -= found[1]
        return found[0]
