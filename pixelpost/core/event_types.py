"""The event types of SES event publishing, by the names configuration uses.

Configuration names them in snake case (`rendering_failure`); SES's JSON spells them
`Rendering Failure`, `DeliveryDelay` and so on. This table is the one place that maps
between the two.
"""

from __future__ import annotations

import enum


class EventType(enum.Enum):
    """One kind of event, valued by its `eventType` string in SES's JSON."""

    SEND = "Send"
    REJECT = "Reject"
    BOUNCE = "Bounce"
    COMPLAINT = "Complaint"
    DELIVERY = "Delivery"
    OPEN = "Open"
    CLICK = "Click"
    RENDERING_FAILURE = "Rendering Failure"
    DELIVERY_DELAY = "DeliveryDelay"
    SUBSCRIPTION = "Subscription"

    @property
    def config_name(self) -> str:
        """The name configuration uses for this type (`delivery_delay`)."""
        return self.name.lower()

    @classmethod
    def from_config_name(cls, name: str) -> EventType:
        """The type a configuration name stands for; KeyError if there is none."""
        if name != name.lower():
            raise KeyError(name)
        return cls[name.upper()]


ALL = "all"
"""The configuration name that subscribes a destination to every type."""
