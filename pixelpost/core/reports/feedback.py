"""Feedback reports (RFC 5965, ARF): the complaints that feedback loops send, as
Microsoft (JMRP), Yahoo (CFL) and others write them."""

from __future__ import annotations

import re

from pixelpost.core.reports.delivery import bare
from pixelpost.core.reports.parts import Part, groups, original_headers, returned_header
from pixelpost.core.reports.records import FeedbackReport, NotAReport

REPORT_TYPE = "feedback-report"
FEEDBACK_TYPE = "message/feedback-report"

_FEEDBACK_FIELD = re.compile(rb"^feedback-type[ \t]*:", re.I | re.M)


def feedback_report(data: bytes, report: Part) -> FeedbackReport | NotAReport:
    """The complaint in the multipart/report `report`. Microsoft's JMRP at times sends
    the original alone, without a feedback-report part: a complaint all the same."""
    parts = list(report.walk())[1:]
    feedback = next((p for p in parts if p.content_type == FEEDBACK_TYPE), None) or next(
        (
            p
            for p in parts
            if p.content_type == "text/plain" and _FEEDBACK_FIELD.search(p.body(data))
        ),
        None,
    )
    original = original_headers(data, parts)
    if feedback is None and original is None:
        return NotAReport(reason="a feedback report with neither its fields nor the original")
    fields: dict[str, list[str]] = {}
    for group in groups(feedback.body(data)) if feedback is not None else ():
        for name, values in group.items():
            fields.setdefault(name, []).extend(v for v in values if v)

    def one(*names: str) -> str | None:
        return next((fields[n][0] for n in names if fields.get(n)), None)

    return FeedbackReport(
        feedback_type=(one("feedback-type") or "abuse").split()[0].lower(),
        user_agent=one("user-agent"),
        arrival_date=one("arrival-date", "received-date"),
        original_rcpt_to=tuple(
            a for v in fields.get("original-rcpt-to", ()) if (a := bare(_without_type(v)))
        ),
        original_mail_from=bare(_without_type(one("original-mail-from") or "")) or None,
        source_ip=one("source-ip"),
        reported_domain=one("reported-domain"),
        original_headers=original,
    )


def _without_type(address: str) -> str:
    """`address` without an `rfc822;` before it, which some reporters write."""
    kind, semicolon, rest = address.partition(";")
    return rest if semicolon and kind.strip().lower() in ("rfc822", "utf-8") else address


def hotmail_complaint(data: bytes, root: Part) -> FeedbackReport | None:
    """Hotmail's older JMRP complaint: a multipart/mixed with the original as its only
    content, marked by the X-HmXmrOriginalRecipient field Hotmail adds to it."""
    if root.content_type != "multipart/mixed":
        return None
    original = original_headers(data, list(root.walk())[1:])
    if not returned_header(original, "x-hmxmroriginalrecipient"):
        return None
    return FeedbackReport(
        feedback_type="abuse",
        user_agent=None,
        arrival_date=None,
        original_rcpt_to=(),
        original_mail_from=None,
        source_ip=None,
        reported_domain=None,
        original_headers=original,
    )
