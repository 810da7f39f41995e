"""What `read_report` returns: one record per kind of mail that comes back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class RecipientStatus:
    """One recipient's group of a delivery status notification."""

    address: str
    """Final-Recipient's address, bare (no `rfc822;`, no `<>`), as written."""
    original: str | None
    """Original-Recipient's address, bare, if given."""
    action: str
    """Lowercased: failed | delayed | delivered | relayed | expanded."""
    status: str
    """RFC 3463 `5.1.1`; from the diagnostic, else 5.0.0 / 4.0.0 by the action, if missing."""
    diagnostic: str | None
    """Diagnostic-Code as given, unfolded; of a plain-text bounce, its paragraph on the
    address."""
    remote_mta: str | None
    """Remote-MTA as given, e.g. `dns; mx.example.net`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryReport:
    """A delivery status notification, or a plain-text bounce read as one."""

    reporting_mta: str | None
    """Reporting-MTA as given, e.g. `dns; postfix.example.org`."""
    arrival_date: str | None
    recipients: tuple[RecipientStatus, ...]
    """Empty when none could be read (the report was cut off, or is malformed): it is
    still a report on the message it returns."""
    original_headers: bytes | None
    """The returned message's header section, raw, without the blank line after it."""
    standard: bool
    """True: RFC 3464; False: found by a non-standard detector."""
    remote_mta_ip: str | None = None
    """An IP address a Remote-MTA field or a diagnostic names (`[192.0.2.1]`). A
    diagnostic may name the sender's address as well (`client [192.0.2.9] blocked`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FeedbackReport:
    """A complaint: an RFC 5965 abuse report (ARF), as feedback loops send them."""

    feedback_type: str
    """Lowercased: abuse | fraud | virus | other | not-spam | auth-failure …"""
    user_agent: str | None
    arrival_date: str | None
    """Arrival-Date, or Received-Date as Microsoft and Yahoo write it."""
    original_rcpt_to: tuple[str, ...]
    """Bare addresses; empty when the provider redacts them."""
    original_mail_from: str | None
    source_ip: str | None
    reported_domain: str | None
    original_headers: bytes | None


@dataclass(frozen=True, kw_only=True, slots=True)
class AutoReply:
    """An automatic answer (out of office, a read receipt): never a bounce."""

    reason: str
    """Why it is one: `Auto-Submitted: auto-replied`, `X-Autoreply`, `subject: Out of
    Office` …"""


@dataclass(frozen=True, kw_only=True, slots=True)
class NotAReport:
    """Mail that is none of the others."""

    reason: str


Report = DeliveryReport | FeedbackReport | AutoReply | NotAReport
