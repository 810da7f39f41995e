"""The suppression list's values: why an address is on it, and the one spelling of an
address that the list keys on.

Addresses on the list compare without regard to case, as mailbox providers treat them
(SES's list does the same): `Jane@Example.COM` and `jane@example.com` are one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pixelpost.core.addresses import mailbox_problem
from pixelpost.core.mail import timestamp

DIAGNOSTIC = (
    "pixelpost did not send the message to this address because it is on the suppression "
    "list (pixelpost suppression remove ADDRESS takes it off; add --config-set NAME for "
    "an unsubscribe from one configuration set)"
)
"""The diagnosticCode of a Bounce for a suppressed recipient."""


class Reason(StrEnum):
    """Why an address is on the list, as SES names it."""

    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    MANUAL = "MANUAL"


REASONS = ", ".join(member.value for member in Reason)
"""The reasons, for messages that name them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Suppressed:
    """One address on the list."""

    address: str
    """As `normalize` spells it."""
    reason: Reason
    created_at: datetime
    message_id: str | None = None
    """The copy whose bounce, complaint or unsubscribe put it there, when one did."""
    config_set: str | None = None
    """The scope: None for all mail (the account), else only this configuration set's
    (an unsubscribe with `unsubscribe_scope = "config_set"`)."""


class BadEntry(ValueError):
    """Not an address or reason the list takes; the message says why."""


def normalize(address: str) -> str:
    """`address` as the list keys it (lowercased), or BadEntry naming the problem."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    problem = mailbox_problem(address, smtputf8=True)
    if problem is not None:
        raise BadEntry(f"{address!r}: {problem}")
    return address.lower()


def reason(text: str) -> Reason:
    """A reason as written (any case), or BadEntry naming the ones there are."""
    try:
        return Reason(text.strip().upper())
    except ValueError:
        raise BadEntry(f"unknown reason {text!r}: one of {REASONS}") from None


def suppressed_json(entry: Suppressed) -> dict[str, str | None]:
    """An entry as the API and `pixelpost suppression list --json` write it, in the
    names of SES's SuppressedDestination."""
    return {
        "emailAddress": entry.address,
        "reason": entry.reason.value,
        "lastUpdateTime": timestamp(entry.created_at),
        "messageId": entry.message_id,
        "configurationSet": entry.config_set,
    }
