"""The spool file format: one accepted message, stored once, however many recipients.

    pixelpost-spool 2\\n
    {envelope as JSON}\\n
    the message, as accepted (control headers removed, nothing added)
    \\nEND <length of what precedes> <CRC-32 of it, 8 hex digits>\\n

The envelope says how each recipient's copy is made at delivery time: its message id,
the `Received:` field to put on top, and, for a tracked message, where its pixel and
links point. A copy is rendered from the one stored original when it is sent, so that
a message to a thousand recipients costs the spool its size once, not a thousand times.

A file cut short, damaged, or whose envelope does not read is `CorruptSpoolFile`: it is
never delivered in part. Files written by version 1 (one file per copy, the copy as it
goes out) are still read.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from pixelpost.core.ids import message_id_to_bytes
from pixelpost.errors import PixelpostError

_MAGIC = b"pixelpost-spool 2\n"
_MAGIC_V1 = b"pixelpost-spool 1\n"
_TRAILER = b"\nEND "
_TRAILER_FIELDS = re.compile(rb"([0-9]{1,12}) ([0-9a-f]{8})\n")


class SpoolError(PixelpostError):
    """The spool cannot be written or read."""


class CorruptSpoolFile(SpoolError):
    """A spool file is incomplete or damaged."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Copy:
    """What goes upstream in one SMTP transaction: a message id and its recipients."""

    id: str
    recipients: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Unsubscribe:
    """How each copy's unsubscribe is offered (the set's `unsubscribe`)."""

    account: bool
    """The scope: an unsubscribe stops all mail (True) or the set's."""
    mailto_domain: str | None
    """The domain of the `mailto:` beside the URL (the intake's); None: URL only."""
    headers: bool
    """Add the List-Unsubscribe fields (replacing the message's own, if it had any);
    False: the message keeps its own, and only the placeholder becomes the URL."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Tracking:
    """How each copy's pixel, links and unsubscribe are made."""

    base_url: str
    """The tracker's base URL, as recipients reach it, for this configuration set."""
    open: bool
    click: bool
    """Links in HTML parts."""
    text_click: bool = False
    """Links in text/plain parts."""
    unsubscribe: Unsubscribe | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Trace:
    """What each copy's `Received:` field says about how the message came in."""

    helo: str | None
    client_ip: str
    hostname: str
    protocol: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """What the spool keeps beside a message: enough to make and deliver every copy and
    to report on it without the store."""

    id: str
    """The spool file's name: the first copy's message id (`queued as`)."""
    mail_from: str
    copies: tuple[Copy, ...]
    mail_options: tuple[str, ...] = ()
    config_set: str | None = None
    received_at: float
    expires_at: float
    mail: str | None = None
    """The SES mail object (JSON) the copies' events carry: the copy's own when there is
    one copy; with several, each copy's `messageId` and `destination` are filled in
    (`pixelpost.core.mail.for_copy`)."""
    notification: bool = False
    """A delivery status notification pixelpost wrote: never bounced, never tracked."""
    rendering_failure: str | None = None
    """Why tracking was left out, when it was."""
    tracking: Tracking | None = None
    """None: every copy is the message as stored."""
    trace: Trace | None = None
    """None: nothing is added on top (notifications, and files of version 1)."""
    return_path: str | None = None
    """The domain of each copy's own envelope sender (VERP, `b-<token>@<domain>`);
    None: every copy goes out from `mail_from`."""

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(r for copy in self.copies for r in copy.recipients)


def _json(envelope: Envelope) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": envelope.id,
        "mail_from": envelope.mail_from,
        "copies": [[copy.id, list(copy.recipients)] for copy in envelope.copies],
        "mail_options": list(envelope.mail_options),
        "config_set": envelope.config_set,
        "received_at": envelope.received_at,
        "expires_at": envelope.expires_at,
        "mail": envelope.mail,
        "notification": envelope.notification,
        "rendering_failure": envelope.rendering_failure,
        "tracking": None,
        "trace": None,
        "return_path": envelope.return_path,
    }
    if (tracking := envelope.tracking) is not None:
        values["tracking"] = [tracking.base_url, tracking.open, tracking.click]
        if tracking.text_click or tracking.unsubscribe is not None:
            values["tracking"].append(tracking.text_click)
        if (unsubscribe := tracking.unsubscribe) is not None:
            values["tracking"].append(
                [unsubscribe.account, unsubscribe.mailto_domain, unsubscribe.headers]
            )
    if (trace := envelope.trace) is not None:
        values["trace"] = [trace.helo, trace.client_ip, trace.hostname, trace.protocol]
    return values


def encode_parts(envelope: Envelope, content: bytes) -> tuple[bytes, bytes, bytes]:
    """A spool file's bytes in three parts (the message itself is not copied)."""
    header = _MAGIC + json.dumps(_json(envelope), separators=(",", ":")).encode() + b"\n"
    size = len(header) + len(content)
    checksum = zlib.crc32(content, zlib.crc32(header))
    return header, content, _TRAILER + f"{size} {checksum:08x}\n".encode()


def encode(envelope: Envelope, content: bytes) -> bytes:
    """A spool file's bytes."""
    return b"".join(encode_parts(envelope, content))


def decode(data: bytes) -> tuple[Envelope, bytes]:
    """The envelope and message of a spool file; CorruptSpoolFile if it is not whole or
    its envelope does not read."""
    magic = _MAGIC if data.startswith(_MAGIC) else _MAGIC_V1
    if not data.startswith(magic):
        raise CorruptSpoolFile("no spool header")
    at = data.rfind(_TRAILER)
    if at < 0:
        raise CorruptSpoolFile("no trailer: the file was cut short")
    body = data[:at]
    trailer = _TRAILER_FIELDS.fullmatch(data[at + len(_TRAILER) :])
    if trailer is None or int(trailer[1]) != len(body) or int(trailer[2], 16) != zlib.crc32(body):
        raise CorruptSpoolFile("length or checksum does not match")
    line_end = body.find(b"\n", len(magic))
    if line_end < 0:
        raise CorruptSpoolFile("no envelope line")
    try:
        values = json.loads(body[len(magic) : line_end])
        envelope = _envelope(values) if magic is _MAGIC else _envelope_v1(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise CorruptSpoolFile(f"the envelope does not read: {exc!r}"[:300]) from None
    return envelope, body[line_end + 1 :]


def _text(value: object, *, optional: bool = False) -> Any:
    if isinstance(value, str) or (optional and value is None):
        return value
    raise TypeError(f"expected a string, got {value!r}"[:120])


def _message_id(value: object) -> str:
    message_id = _text(value)
    message_id_to_bytes(message_id)  # ValueError unless it is one
    return str(message_id)


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}"[:120])


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, got {value!r}"[:120])


def _texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}"[:120])
    return tuple(_text(item) for item in value)


def _common(values: dict[str, Any]) -> dict[str, Any]:
    """The fields both versions write, checked."""
    return {
        "id": _message_id(values["id"]),
        "mail_from": _text(values["mail_from"]),
        "mail_options": _texts(values.get("mail_options", [])),
        "config_set": _text(values.get("config_set"), optional=True),
        "received_at": _number(values["received_at"]),
        "expires_at": _number(values["expires_at"]),
        "mail": _text(values.get("mail"), optional=True),
        "notification": _flag(values.get("notification", False)),
        "rendering_failure": _text(values.get("rendering_failure"), optional=True),
        "return_path": _text(values.get("return_path"), optional=True),
    }


def _envelope(values: dict[str, Any]) -> Envelope:
    copies = tuple(
        Copy(id=_message_id(copy_id), recipients=_texts(recipients))
        for copy_id, recipients in values["copies"]
    )
    if not copies or not all(copy.recipients for copy in copies):
        raise ValueError("a message without recipients")
    tracking = trace = None
    if (found := values.get("tracking")) is not None:
        tracking = _tracking(found)
    if (found := values.get("trace")) is not None:
        helo, client_ip, hostname, protocol = found
        trace = Trace(
            helo=_text(helo, optional=True),
            client_ip=_text(client_ip),
            hostname=_text(hostname),
            protocol=_text(protocol),
        )
    return Envelope(**_common(values), copies=copies, tracking=tracking, trace=trace)


def _tracking(found: list[Any]) -> Tracking:
    """[base URL, opens, clicks], then text clicks and the unsubscribe when there are."""
    base_url, opens, clicks, *more = found
    unsubscribe = None
    if len(more) > 1:
        account, mailto_domain, headers = more[1]
        unsubscribe = Unsubscribe(
            account=_flag(account),
            mailto_domain=_text(mailto_domain, optional=True),
            headers=_flag(headers),
        )
    return Tracking(
        base_url=_text(base_url),
        open=_flag(opens),
        click=_flag(clicks),
        text_click=_flag(more[0]) if more else False,
        unsubscribe=unsubscribe,
    )


def _envelope_v1(values: dict[str, Any]) -> Envelope:
    """A file of version 1: one copy, already made (its mail object names it)."""
    common = _common(values)
    recipients = _texts(values["recipients"])
    if not recipients:
        raise ValueError("a message without recipients")
    return Envelope(**common, copies=(Copy(id=common["id"], recipients=recipients),))
