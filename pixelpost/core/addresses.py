"""Envelope addresses as RFC 5321 writes them (`Mailbox` in section 4.1.2), checked at
MAIL and RCPT.

aiosmtpd reads addresses leniently: a NUL, a CR or an empty `RCPT TO:<>` gets through,
and the upstream would then refuse or, worse, read something else. An address pixelpost
accepts is one it can send upstream exactly as it came, so that events and bounces name
the address the upstream saw.
"""

from __future__ import annotations

import email.utils
import re

LOCAL_PART_LIMIT = 64
ADDRESS_LIMIT = 254
"""RFC 5321's path limit of 256 octets, less the angle brackets."""

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010ffff]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x20-\x7e])*"')
_LET_DIG = r"[A-Za-z0-9\x80-\U0010ffff]"
_LABEL = rf"(?:{_LET_DIG}(?:[A-Za-z0-9\-\x80-\U0010ffff]*{_LET_DIG})?)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")


def mailbox_problem(address: str, *, smtputf8: bool) -> str | None:  # noqa: PLR0911 (one return per problem)
    """Why `address` is not a mailbox pixelpost relays, or None if it is one."""
    if not address:
        return "empty address"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        return "control character in address"
    if not smtputf8 and not address.isascii():
        return "non-ASCII address without SMTPUTF8"
    try:
        size = len(address.encode("utf-8"))
    except UnicodeEncodeError:  # aiosmtpd keeps octets that are not UTF-8 as surrogates
        return "address is not UTF-8"
    if size > ADDRESS_LIMIT:
        return "address too long"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "no local part and domain"
    if len(local.encode("utf-8")) > LOCAL_PART_LIMIT:
        return "local part too long"
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        return "malformed local part"
    if not (_DOMAIN.fullmatch(domain) or _ADDRESS_LITERAL.fullmatch(domain)):
        return "malformed domain"
    # aiosmtplib puts addresses on the upstream's command line through parseaddr: one
    # it would rewrite (needless quotes, say) would reach the upstream as another.
    if email.utils.parseaddr(address)[1] != address:
        return "address the upstream would be sent differently"
    return None
