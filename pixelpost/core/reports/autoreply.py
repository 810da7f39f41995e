"""Auto-replies (RFC 3834): out-of-office and vacation answers, autoresponders. The
fields that say so, else a subject that does."""

from __future__ import annotations

import re

from pixelpost.core.reports.parts import Part, subject
from pixelpost.core.reports.records import AutoReply

_AUTO_SUBJECT = re.compile(
    r"^\s*(out of office|automatic reply|auto:|abwesenheitsnotiz|réponse automatique)", re.I
)
_LOCALIZED_AUTO_SUBJECT = re.compile(
    r"(automatic reply|automatische antwort|réponse automatique|respuesta automática"
    r"|risposta automatica|automatisch antwoord|resposta automática|autosvar"
    r"|out of office|abwesenheitsnotiz|auto-?reply)",
    re.I,
)
"""Exchange's answers in other languages, anywhere in the subject: trusted only with
the X-Auto-Response-Suppress field Exchange puts on them (and on much else)."""


def auto_reply(data: bytes, message: Part) -> AutoReply | None:
    """Why `message` is an auto-reply, or None."""
    submitted = message.first(data, "auto-submitted")
    if submitted and re.split(r"[\s;(]", submitted, maxsplit=1)[0].lower() not in ("", "no"):
        return AutoReply(reason=f"Auto-Submitted: {submitted[:100]}")
    for name in ("X-Autoreply", "X-Autorespond"):
        if message.has(name.lower()):
            return AutoReply(reason=name)
    if (message.first(data, "precedence") or "").lower() == "auto_reply":
        return AutoReply(reason="Precedence: auto_reply")
    text = subject(data, message)
    localized = _LOCALIZED_AUTO_SUBJECT.search(text)
    if localized and message.has("x-auto-response-suppress"):
        return AutoReply(reason=f"X-Auto-Response-Suppress, subject: {localized[1]}")
    if said := _AUTO_SUBJECT.match(text):
        return AutoReply(reason=f"subject: {said[1].rstrip(':')}")
    return None
