"""SES's `mail` object: what every event of one copy of a message carries.

The relay builds it once per message, when it accepts it, from the headers as the client
sent them (SES's examples keep `X-SES-*` headers there too); a message with several
copies gets each copy's from it, with the copy's message id and recipients
(`for_copy`). The store keeps it beside the copy's id, so that opens and clicks,
recorded later and elsewhere, carry it.

Only `ses:caller-identity` needs a word: SES puts the IAM identity that sent the mail
there; pixelpost puts the SMTP AUTH user, or, for a client admitted by
`relay.allow_networks`, its address.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader
from typing import Any

HEADERS_LIMIT = 10 * 1024
"""SES truncates `mail.headers` past 10 KB and says so in `headersTruncated`."""

_ADDRESS_HEADERS = {
    "from": "from",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "replyTo",
    "sender": "sender",
    "return-path": "returnPath",
}
_TEXT_HEADERS = {"subject": "subject", "date": "date"}

JSON = dict[str, Any]


def timestamp(when: datetime) -> str:
    """SES's timestamp format: ISO 8601 in UTC with milliseconds."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


_FIELD = re.compile(r"^([^:\s]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)


@functools.lru_cache(maxsize=4096)
def _parsed(name: str, value: str) -> tuple[str, ...]:
    """One header as `email`'s default policy reads it: addresses, or the decoded text.
    Cached: a campaign sends the same From and Subject many times over."""
    header = policy.default.header_fetch_parse(name, value)
    if isinstance(header, AddressHeader):
        return tuple(str(address) for address in header.addresses)
    return (str(header),)


def common_headers(header_block: bytes) -> JSON:
    """SES's `commonHeaders`: the usual headers, decoded (RFC 2047) and address lists
    split. A header the standard library cannot read is left out, not guessed at."""
    # Decoded as UTF-8 first (RFC 6532): parsing bytes would leave surrogates in place of
    # non-ASCII octets, which JSON cannot carry. Only the fields used are parsed.
    found: dict[str, list[str]] = {}
    for field in _FIELD.finditer(header_block.decode("utf-8", "replace")):
        name = field[1].lower()
        if name in _ADDRESS_HEADERS or name in _TEXT_HEADERS:
            found.setdefault(name, []).append(field[2].lstrip(" \t").rstrip("\r\n"))
    common: JSON = {}
    for name, key in (*_ADDRESS_HEADERS.items(), *_TEXT_HEADERS.items()):
        values = found.get(name)
        if not values:
            continue
        if name in _TEXT_HEADERS:
            values = values[:1]
        try:
            parsed = [item for value in values for item in _parsed(name, value)]
        except (HeaderParseError, ValueError, IndexError, TypeError):
            continue
        common[key] = parsed if name in _ADDRESS_HEADERS else parsed[0]
    return common


def from_domain(common: JSON, mail_from: str) -> str:
    """The domain of the From address (SES's `ses:from-domain`), else of the sender."""
    candidates: list[str] = [*common.get("from", []), mail_from]
    for address in candidates:
        domain = address.rpartition("@")[2].rstrip(">").strip()
        if "@" in address and domain:
            return domain.lower()
    return ""


def for_copy(template: JSON, *, message_id: str, destination: Sequence[str]) -> JSON:
    """The `mail` object of one copy, from the message's (`mail_object` without a
    message id and destination)."""
    return {
        **template,
        "messageId": message_id,
        "destination": list(destination),
        "commonHeaders": {**template["commonHeaders"], "messageId": message_id},
    }


def mail_object(
    *,
    message_id: str,
    sent_at: datetime,
    source: str,
    destination: Sequence[str],
    headers: Sequence[tuple[str, str]],
    common: JSON,
    config_set: str | None,
    message_tags: Mapping[str, Sequence[str]],
    source_ip: str,
    caller_identity: str,
) -> JSON:
    """The `mail` object of one copy of a message."""
    kept: list[JSON] = []
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if size > HEADERS_LIMIT:
            break
        kept.append({"name": name, "value": value})
    tags: dict[str, list[str]] = {name: list(values) for name, values in message_tags.items()}
    if config_set is not None:
        tags["ses:configuration-set"] = [config_set]
    tags["ses:from-domain"] = [from_domain(common, source)]
    tags["ses:source-ip"] = [source_ip]
    tags["ses:caller-identity"] = [caller_identity]
    return {
        "timestamp": timestamp(sent_at),
        "source": source,
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": len(kept) < len(headers),
        "headers": kept,
        # As in SES, commonHeaders.messageId is the relay's id for the copy; the
        # original Message-ID stays in `headers`.
        "commonHeaders": {**common, "messageId": message_id},
        "tags": tags,
    }
