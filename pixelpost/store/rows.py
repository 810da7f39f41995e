"""Rows as every store reads them back: event types by their stored names, dead
letters, and suppression list entries (the stores select the same columns in the same
order)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pixelpost.core.event_types import EventType
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store.base import DeadLetter, SnsSubscription


def event_type(name: str) -> EventType:
    """An event type as the log writes it (`pixelpost.store.groupcommit.TYPE_NAMES`)."""
    return EventType[name.upper()]


def dead_letter(row: Iterable[Any]) -> DeadLetter:
    """(event id, destination, type, message id, attempts, last error, updated at)."""
    event_id, destination, type_name, message_id, attempts, error, updated_at = row
    return DeadLetter(
        event_id=event_id,
        destination=destination,
        event_type=event_type(type_name),
        message_id=message_id,
        attempts=attempts,
        last_error=error or "",
        failed_at=datetime.fromtimestamp(updated_at, UTC),
    )


def suppressed(row: Iterable[Any]) -> Suppressed:
    """(address, reason, created at, message id, scope: '' for the account)."""
    address, reason, created_at, message_id, config_set = row
    return Suppressed(
        address=str(address),
        reason=Reason(str(reason)),
        created_at=datetime.fromtimestamp(float(created_at), UTC),
        message_id=None if message_id is None else str(message_id),
        config_set=str(config_set) or None,
    )


def sns_subscription(row: Iterable[Any]) -> SnsSubscription:
    """(destination, arn, endpoint, topic arn, token, state, requested at, changed at)."""
    destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at = row
    return SnsSubscription(
        destination=destination,
        arn=arn,
        endpoint=endpoint,
        topic_arn=topic_arn,
        token=token,
        state=state,
        requested_at=float(requested_at),
        changed_at=float(changed_at),
    )
