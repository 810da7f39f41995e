"""Message ids: 16 bytes, time-ordered (48-bit milliseconds, then 80 random bits), written
as 32 lowercase hex digits.

Time order keeps index inserts local in the store and tells an id's age at a glance;
the random part keeps ids unguessable and unique across relay instances.
"""

from __future__ import annotations

import secrets
import time

MESSAGE_ID_BYTES = 16


def new_message_id(now: float | None = None) -> str:
    """A fresh message id."""
    millis = int((time.time() if now is None else now) * 1000)
    return (millis.to_bytes(6, "big") + secrets.token_bytes(10)).hex()


def message_id_to_bytes(message_id: str) -> bytes:
    """The 16 bytes of a message id; ValueError if it is not one."""
    raw = bytes.fromhex(message_id)
    if len(raw) != MESSAGE_ID_BYTES or raw.hex() != message_id:
        raise ValueError(f"not a message id: {message_id!r}")
    return raw


def message_id_from_bytes(raw: bytes) -> str:
    """The written form of 16 message id bytes."""
    return raw.hex()
