"""Delivery status notifications (RFC 3464, and RFC 6533's global ones for addresses in
UTF-8): the per-message fields, then one group of fields per recipient."""

from __future__ import annotations

import ipaddress
import re

from pixelpost.core.bounces import diagnostic_status, find_status
from pixelpost.core.reports.parts import Part, groups, original_headers
from pixelpost.core.reports.records import DeliveryReport, RecipientStatus

MAX_RECIPIENTS = 1000
"""Recipients read from one report (RFC 5321 asks a server to take 100 per message)."""
STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
REPORT_TYPES = ("delivery-status", "global-delivery-status")
STATUS_OF_ACTION = {"failed": "5.0.0", "delayed": "4.0.0"}
"""A recipient's status when nothing gives one; 2.0.0 for the other actions."""

_RECIPIENT_FIELD = re.compile(rb"^(?:final|original)-recipient[ \t]*:", re.I | re.M)
_ACTIONS = (
    ("fail", "failed"),
    ("error", "failed"),  # OpenSMTPD's
    ("delay", "delayed"),
    ("deliver", "delivered"),
    ("relay", "relayed"),
    ("expand", "expanded"),
)
_ACTION_OF_CLASS = {"2": "delivered", "4": "delayed", "5": "failed"}
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\]", re.I)
_BARE_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_CLIENT = re.compile(r"client\b[^\[\]]{0,24}$", re.I)
"""What precedes an address that is the sender's own, not the remote server's
(`Client host [198.51.100.7] blocked using zen.spamhaus.org`)."""


def delivery_report(data: bytes, report: Part) -> DeliveryReport:
    """The notification in the multipart/report `report`, with what could be read."""
    parts = list(report.walk())[1:]
    per_message: dict[str, str] = {}
    recipients: list[RecipientStatus] = []
    status_part = _status_part(data, report, parts)
    for group in groups(status_part.body(data)) if status_part is not None else ():
        for name in ("reporting-mta", "arrival-date"):
            if name in group:
                per_message.setdefault(name, group[name][0])
        if (found := recipient(group)) is not None:
            recipients.append(found)
            if len(recipients) >= MAX_RECIPIENTS:
                break
    return DeliveryReport(
        reporting_mta=per_message.get("reporting-mta"),
        arrival_date=per_message.get("arrival-date"),
        recipients=tuple(recipients),
        original_headers=original_headers(data, parts),
        standard=True,
        remote_mta_ip=next(
            (
                ip
                for r in recipients
                if (ip := ip_in(r.remote_mta, bare=True) or server_ip_in(r.diagnostic))
            ),
            None,
        ),
    )


def _status_part(data: bytes, report: Part, parts: list[Part]) -> Part | None:
    """The delivery-status part; from some MTAs, a text/plain part with its fields,
    after the human-readable first part (which quotes them at times)."""
    found = next((p for p in parts if p.content_type in STATUS_TYPES), None)
    if found is not None:
        return found
    texts = [
        p
        for p in parts
        if p.content_type == "text/plain" and _RECIPIENT_FIELD.search(p.body(data)) is not None
    ]
    human = report.children[0] if report.children else None
    return next((p for p in texts if p is not human), texts[0] if texts else None)


def recipient(group: dict[str, list[str]]) -> RecipientStatus | None:
    """One recipient's group, or None: it names no address, or nothing says what
    happened (a group cut off before its Action and Status)."""
    original = _address(group.get("original-recipient"))
    address = _address(group.get("final-recipient")) or original
    if address is None:
        return None
    diagnostic = _one(group, "diagnostic-code")
    status = find_status(_one(group, "status") or "") or diagnostic_status(diagnostic or "")
    action = _action(_one(group, "action") or "")
    if action is None:
        if status is None:
            return None
        action = _ACTION_OF_CLASS[status[0]]
    return RecipientStatus(
        address=address,
        original=original,
        action=action,
        status=status or STATUS_OF_ACTION.get(action, "2.0.0"),
        diagnostic=diagnostic,
        remote_mta=_one(group, "remote-mta"),
    )


def _one(group: dict[str, list[str]], name: str) -> str | None:
    values = group.get(name)
    return values[0] or None if values else None


def _action(value: str) -> str | None:
    """The action, lowercased; some MTAs add comments (`failed (permanent)`)."""
    word = value.strip().lower()
    return next((action for prefix, action in _ACTIONS if word.startswith(prefix)), None)


def _address(values: list[str] | None) -> str | None:
    """The address of a `type; address` field, bare; the `\\x{…}` escapes of RFC 6533's
    utf-8 type decoded."""
    if not values:
        return None
    kind, semicolon, address = values[0].partition(";")
    if not semicolon:
        kind, address = "", kind
    address = bare(address)
    if kind.strip().lower() == "utf-8":
        address = _UNICODE_ESCAPE.sub(_unescape, address)
    return address or None


def _unescape(match: re.Match[str]) -> str:
    code = int(match[1], 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def bare(address: str) -> str:
    """`address` without blanks around it and without its angle brackets."""
    address = address.strip()
    opening = address.rfind("<")
    if address.endswith(">") and opening >= 0:
        address = address[opening + 1 : -1].strip()
    return address


def server_ip_in(text: str | None, *, bare: bool = False) -> str | None:
    """The first address in `text` that names the remote server (`ip_in`), passing
    over one that a refusal names as its client (the sender's own)."""
    if not text:
        return None
    found = [(m.start(), m[1]) for m in _BRACKETED_IP.finditer(text)]
    if bare:
        found += [(m.start(), m[0]) for m in _BARE_IPV4.finditer(text)]
    for at, candidate in sorted(found):
        if _CLIENT.search(text[max(0, at - 40) : at]):
            continue
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def ip_in(text: str | None, *, bare: bool) -> str | None:
    """The first IP address in `text` in brackets (`[192.0.2.1]`, `[IPv6:2001:db8::1]`),
    or, if `bare`, written out as well (`192.0.2.1 does not like recipient`)."""
    if not text:
        return None
    candidates = [m[1] for m in _BRACKETED_IP.finditer(text)]
    if bare:
        candidates += _BARE_IPV4.findall(text)
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
