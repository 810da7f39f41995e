"""Unsubscribes and resubscribes, as the suppression list and SES's Subscription event
record them.

An unsubscribe puts the copy's recipient on the suppression list with reason
UNSUBSCRIBE in the scope its configuration set names (`unsubscribe_scope`): that set's
mail, or all mail. The Subscription event that says so goes to the set's destinations,
with the set's name as its `contactList` (SES's contact lists are pixelpost's sets) and
the scope beside it. The tracker's page and one-click POST and the intake's `mailto:`
all make the same change; the store makes it once (`SuppressionList.unsubscribe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pixelpost.core.events import Event, SubscriptionSource, subscription_event
from pixelpost.core.suppression import Reason, Suppressed, normalize

ACCOUNT = "account"
"""The scope of an unsubscribe from all mail, as the event's `scope` names it."""
CONFIG_SET = "config_set"
"""The scope of an unsubscribe from one configuration set's mail."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Subscriber:
    """Who unsubscribes, from what: a copy's recipient, in its set's scope."""

    message_id: str
    """The copy whose unsubscribe link or address was used."""
    address: str
    config_set: str
    account: bool
    """The scope: all mail (True), or the set's."""

    @property
    def scope(self) -> str | None:
        """The suppression list's scope: None for the account, else the set."""
        return None if self.account else self.config_set

    @property
    def key(self) -> str:
        """The list's spelling of the address (BadEntry if it has none)."""
        return normalize(self.address)


def _event(
    subscriber: Subscriber, *, source: SubscriptionSource, unsubscribed: bool, now: datetime
) -> Event:
    return subscription_event(
        subscriber.message_id,
        contact_list=subscriber.config_set,
        scope=ACCOUNT if subscriber.account else CONFIG_SET,
        source=source,
        unsubscribed=unsubscribed,
        now=now,
    )


def unsubscribed(
    subscriber: Subscriber, *, source: SubscriptionSource, now: datetime
) -> tuple[Suppressed, Event]:
    """The suppression list's entry and the Subscription event of an unsubscribe."""
    entry = Suppressed(
        address=subscriber.key,
        reason=Reason.UNSUBSCRIBE,
        created_at=now,
        message_id=subscriber.message_id,
        config_set=subscriber.scope,
    )
    return entry, _event(subscriber, source=source, unsubscribed=True, now=now)


def resubscribed(subscriber: Subscriber, *, source: SubscriptionSource, now: datetime) -> Event:
    """The Subscription event of a recipient who subscribes again."""
    return _event(subscriber, source=source, unsubscribed=False, now=now)
