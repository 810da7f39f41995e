"""Mail that comes back, read: what the intake makes of a returned message.

`read_report` is total: it never raises, and the worst it returns is `NotAReport` naming
why; its work is linear in the size of the message (`parts`, `plain`). It recognises,
in this order:

    a multipart/report     delivery-status          DeliveryReport   delivery.py
                           feedback-report          FeedbackReport   feedback.py
                           disposition-notification AutoReply
    Hotmail's multipart/mixed complaint             FeedbackReport   feedback.py
    an auto-reply (RFC 3834)                        AutoReply        autoreply.py
    a plain-text bounce (flufl.bounce)              DeliveryReport   plain.py
                                                    (standard=False)
    anything else                                   NotAReport

A report's structure goes first because a DSN says `Auto-Submitted: auto-replied` too;
an auto-reply goes before the plain-text detectors because an out-of-office text can
name addresses the way a bounce does, unless it comes from MAILER-DAEMON or postmaster.
"""

from __future__ import annotations

import logging

from pixelpost.core.bounces import BounceKind, classify
from pixelpost.core.headers import message_start
from pixelpost.core.reports import delivery, feedback
from pixelpost.core.reports.autoreply import auto_reply
from pixelpost.core.reports.parts import Part, header_section, read_parts, returned_header
from pixelpost.core.reports.plain import bounce_subject, from_mail_system, plain_bounce
from pixelpost.core.reports.records import (
    AutoReply,
    DeliveryReport,
    FeedbackReport,
    NotAReport,
    RecipientStatus,
    Report,
)

__all__ = [
    "AutoReply",
    "DeliveryReport",
    "FeedbackReport",
    "NotAReport",
    "RecipientStatus",
    "Report",
    "bounce_kind_of",
    "header_section",
    "read_report",
    "returned_header",
]

log = logging.getLogger(__name__)

_MDN_TYPES = ("disposition-notification", "global-disposition-notification")
_GENERIC_STATUSES = ("5.0.0", "4.0.0")


def read_report(message: bytes) -> Report:
    """What the returned `message` is, with what could be read of it."""
    try:
        return _read(bytes(message))
    except Exception as exc:  # the promise is to never raise: what broke is logged
        log.warning("a report of %d bytes unreadable: %r", len(message), exc, exc_info=True)
        return NotAReport(reason=f"unreadable: {type(exc).__name__}")


def bounce_kind_of(report: DeliveryReport, recipient: RecipientStatus) -> BounceKind:
    """SES's bounce type for one of `report`'s recipients (`bounces.classify`). The
    5.0.0 or 4.0.0 that a plain-text bounce gives a recipient whose text names no
    status is no status: such a recipient is Undetermined unless its text says more."""
    status = recipient.status
    if not report.standard and status in _GENERIC_STATUSES:
        status = ""
    return classify(status, recipient.diagnostic)


def _read(data: bytes) -> Report:
    if not data.strip():
        return NotAReport(reason="empty message")
    start = message_start(data)
    root = read_parts(data, start)
    report = next((p for p in root.walk() if p.content_type == "multipart/report"), None)
    if report is not None:
        return _report(data, report)
    complaint = feedback.hotmail_complaint(data, root)
    if complaint is not None:
        return complaint
    auto = auto_reply(data, root)
    mail_system = from_mail_system(data, root)
    if auto is not None and not mail_system:
        return auto
    if mail_system or bounce_subject(data, root):
        bounce = plain_bounce(data, start, root)
        if bounce is not None:
            return bounce
    return auto or NotAReport(reason="no multipart/report and no known bounce format")


def _report(data: bytes, report: Part) -> Report:
    """A multipart/report, by its report-type, else by the parts it has."""
    kind = report.report_type
    types = {p.content_type for p in report.walk()}
    if kind in delivery.REPORT_TYPES or (kind is None and types & set(delivery.STATUS_TYPES)):
        return delivery.delivery_report(data, report)
    if kind == feedback.REPORT_TYPE or (kind is None and feedback.FEEDBACK_TYPE in types):
        return feedback.feedback_report(data, report)
    if kind in _MDN_TYPES:
        return AutoReply(reason=f"multipart/report; report-type={kind}")
    return NotAReport(reason=f"a multipart/report of report-type {kind or '(none)'}")
