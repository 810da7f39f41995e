"""Signed tracking tokens, shared by the relay (which writes them) and the tracker (which
reads them).

An open token is the base64url form of

    kind+version (1) | key id (1) | message id (16) | MAC (16)          -> 46 characters

and a click token adds the link index and tags before the MAC, and the destination
after it, readable:

    /c/<base64url header and MAC>/<destination without its scheme, percent-encoded>

The MAC is HMAC-SHA256, truncated to 128 bits, over the header and the destination.
The message id names one recipient's copy of one message, sent through one
configuration set: the relay gives every copy its own id and records that copy's
recipient and set with it, so a token that verifies binds all of them. Everything a
redirect needs is in the token, so links keep working without the store, after
retention purges and on any tracker instance that holds the key.

A return-path token names a copy in the local part of its envelope sender (VERP), so
that a report returned to that address says which copy failed. Local parts must survive
mail systems that change their case, so it is base32, lowercase:

    kind+version (1) | key id (1) | message id (16) | MAC (10)          -> 45 characters

An unsubscribe token (`/u/<token>`) carries what an unsubscribe needs without the store,
so that it works on any tracker and long after retention: the copy's id in the clear,
and the scope, the configuration set and the recipient's address encrypted (AES-SIV,
RFC 5297, under a key derived from the signing key; deterministic, so a copy's token
is the same each time it is made, and its tag authenticates the id as well):

    kind+version (1) | key id (1) | message id (16) | SIV (16) | encrypted scope,
    set and address                                                     -> base64url

An unsubscribe `mailto:` names only the copy, like a return path (`u-<base32>@…`):
a local part has room for no more, and the address comes from the copy's record.

Keys rotate: the first configured key signs, every configured key verifies. Each token
names its key by an 8-bit id derived from the key. Verification compares MACs in
constant time and accepts only the canonical spelling of a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from pixelpost.core.ids import MESSAGE_ID_BYTES, message_id_from_bytes, message_id_to_bytes
from pixelpost.errors import PixelpostError

_VERSION = 1
_KIND_OPEN = 0
_KIND_CLICK = 1
_KIND_RETURN = 2
_KIND_UNSUBSCRIBE = 3
_KIND_UNSUBSCRIBE_MAIL = 4
_HTTPS = 0x08
_MAC_BYTES = 16
_RETURN_MAC_BYTES = 10
"""80 bits: a forged return path earns a bounce for someone else's copy, not a redirect."""
_RETURN_TOKEN_CHARS = 45
RETURN_PREFIX = "b-"
"""What a return path's local part starts with, before its token."""
UNSUBSCRIBE_PREFIX = "u-"
"""What an unsubscribe mailto's local part starts with, before its token."""
_SIV_INFO = b"pixelpost unsubscribe token\x00"
_SIV_BYTES = 16
_SCOPE_ACCOUNT = 1
_DOMAIN = b"pixelpost tracking token\x00"
_URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64_VALUES = {char: value for value, char in enumerate(_URLSAFE_ALPHABET)}
# "-_" become "+/", and "+/" (not base64url) become "!", which strict decoding refuses.
_FROM_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")
_UNUSED_BITS = {0: 0, 2: 0b1111, 3: 0b11}
# Left as they are in the destination: what is safe in a URL path and in HTML once
# escaped. Everything else, "%", "?" and "#" among it, is percent-encoded.
_SAFE = "/:@!$&'()*+,;=~[]"
# What `quote(rest, safe=_SAFE)` does to ASCII, done by a regex (several times faster).
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9_.~/:@!$&'()*+,;=\[\]-]")
_ASCII_ESCAPES = {chr(code): f"%{code:02X}" for code in range(128)}


def _escape_match(match: re.Match[str]) -> str:
    return _ASCII_ESCAPES[match.group()]


_MAX_TOKEN_CHARS = 16384


# CPython's own SHA-256, not OpenSSL's: on the tracker's hot path, between aiohttp's
# work, OpenSSL's HMAC cost 15 us a request against 3 us for this (bench/tracker.py).
_sha256: Any
try:
    from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        _sha256 = hashlib.sha256
_BLOCK = 64


class _Hmac:
    """HMAC-SHA256 (RFC 2104) under one key, over `_DOMAIN` and the given parts, with
    the key's pads (and the domain) hashed once."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = _sha256(bytes(b ^ 0x36 for b in key) + _DOMAIN)
        self._outer = _sha256(bytes(b ^ 0x5C for b in key))

    def mac(self, header: bytes, rest: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(header + b"\x00" + rest)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return bytes(outer.digest()[:_MAC_BYTES])


class InvalidToken(PixelpostError):
    """The token is damaged, forged, or signed with a key that is not configured."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenToken:
    """What an open token says."""

    message_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ClickToken:
    """What a click token says."""

    message_id: str
    link_index: int
    url: str
    tags: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, kw_only=True, slots=True)
class UnsubscribeToken:
    """What an unsubscribe token says."""

    message_id: str
    address: str
    """The copy's recipient, as the relay sent to it."""
    config_set: str
    """The copy's configuration set."""
    account: bool
    """The scope: all mail (True) or the set's (False)."""


def key_id(key: bytes) -> int:
    """The 8-bit id a token carries to name its key."""
    return hashlib.sha256(b"pixelpost key id\x00" + key).digest()[0]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """Strict base64url: only its alphabet, and only the canonical spelling (the unused
    low bits of the last character are 0), so that no two tokens decode alike."""
    if not text.isascii() or len(text) % 4 == 1:
        raise InvalidToken
    unused = _UNUSED_BITS[len(text) % 4]
    if unused and _BASE64_VALUES.get(text[-1], 1) & unused:
        raise InvalidToken
    try:
        return binascii.a2b_base64(
            text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4),
            strict_mode=True,
        )
    except binascii.Error:
        raise InvalidToken from None


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]  # link numbers and tag lengths mostly are
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = tuple(bytes([value]) for value in range(0x80))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 35:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise InvalidToken


def _encode_tags(tags: Mapping[str, Sequence[str]]) -> bytes:
    return ";".join(
        f"{name}:{value}" for name, values in tags.items() for value in values
    ).encode()


def _decode_tags(raw: bytes) -> dict[str, tuple[str, ...]]:
    tags: dict[str, list[str]] = {}
    for entry in raw.decode("utf-8").split(";") if raw else ():
        name, _, value = entry.partition(":")
        tags.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in tags.items()}


def _split_scheme(url: str) -> tuple[bool, str]:
    lowered = url[:8].lower()
    if lowered.startswith("https://"):
        return True, url[8:]
    if lowered.startswith("http://"):
        return False, url[7:]
    raise ValueError(f"not an http(s) URL: {url[:40]!r}")


def _encode_rest(rest: str) -> str:
    # A doubled slash is encoded too: some proxies merge slashes in paths.
    encoded = _ASCII_UNSAFE.sub(_escape_match, rest) if rest.isascii() else quote(rest, safe=_SAFE)
    return encoded.replace("//", "/%2F")


class TokenCodec:
    """Signs and verifies tokens with the configured keys (newest first)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._signing = _Hmac(keys[0])
        self._signing_id = key_id(keys[0])
        self._keys: dict[int, list[_Hmac]] = {}
        for key in keys:
            self._keys.setdefault(key_id(key), []).append(_Hmac(key))
        self._raw_keys = tuple(keys)
        self._sivs: dict[int, list[AESSIV]] | None = None  # made on first use

    def _siv_keys(self) -> dict[int, list[AESSIV]]:
        """The AES-SIV keys of unsubscribe tokens, one per signing key (by key id)."""
        if self._sivs is None:
            sivs: dict[int, list[AESSIV]] = {}
            for key in self._raw_keys:
                derived = hmac.new(key, _SIV_INFO, hashlib.sha512).digest()  # 512 bits
                sivs.setdefault(key_id(key), []).append(AESSIV(derived))
            self._sivs = sivs
        return self._sivs

    def _verify(self, header: bytes, mac: bytes, rest: bytes) -> None:
        candidates = self._keys.get(header[1], [])
        ok = False
        for key in candidates:  # all of them, so that timing says nothing about which
            ok |= hmac.compare_digest(key.mac(header, rest), mac)
        if not ok:
            raise InvalidToken

    def signer(self, message_id: str) -> MessageSigner:
        """Signs the tokens of one copy of a message."""
        return MessageSigner(
            key=self._signing,
            prefix=bytes([self._signing_id]) + message_id_to_bytes(message_id),
        )

    def open_token(self, message_id: str) -> str:
        """The token of the pixel for one copy of a message."""
        return self.signer(message_id).open_token()

    def click_token(
        self, message_id: str, link_index: int, url: str, tags: Mapping[str, Sequence[str]]
    ) -> str:
        """The path of a link's redirect, `<signature>/<destination>`, for one copy."""
        return self.signer(message_id).click_token(link_index, url, tags)

    def _mail_token(self, kind: int, message_id: str) -> str:
        """A copy's token for an address's local part: base32, lowercase."""
        header = bytes([_VERSION << 4 | kind, self._signing_id]) + message_id_to_bytes(message_id)
        mac = self._signing.mac(header, b"")[:_RETURN_MAC_BYTES]
        return base64.b32encode(header + mac).decode("ascii").rstrip("=").lower()

    def _read_mail_token(self, kind: int, token: str) -> str:
        """The message id a local part's token of `kind` names, in any case;
        InvalidToken unless it verifies."""
        if len(token) != _RETURN_TOKEN_CHARS or not token.isascii():
            raise InvalidToken
        try:
            raw = base64.b32decode(token.upper() + "===")
        except binascii.Error:
            raise InvalidToken from None
        if base64.b32encode(raw).decode("ascii").rstrip("=") != token.upper():
            raise InvalidToken  # unused low bits set: not the canonical spelling
        header, mac = raw[:-_RETURN_MAC_BYTES], raw[-_RETURN_MAC_BYTES:]
        if header[0] != _VERSION << 4 | kind:
            raise InvalidToken
        ok = False
        for key in self._keys.get(header[1], []):
            ok |= hmac.compare_digest(key.mac(header, b"")[:_RETURN_MAC_BYTES], mac)
        if not ok:
            raise InvalidToken
        return message_id_from_bytes(header[2:])

    @staticmethod
    def _local_token(address: str, prefix: str) -> str:
        local = address.rpartition("@")[0] if "@" in address else address
        if local[: len(prefix)].lower() != prefix:
            raise InvalidToken
        return local[len(prefix) :]

    def return_token(self, message_id: str) -> str:
        """The local part (after its prefix) of the return path of one copy."""
        return self._mail_token(_KIND_RETURN, message_id)

    def return_address(self, message_id: str, domain: str) -> str:
        """The envelope sender of one copy whose reports come back to `domain`."""
        return f"{RETURN_PREFIX}{self.return_token(message_id)}@{domain}"

    def read_return_address(self, address: str) -> str:
        """The message id that a return path (`b-<token>@domain`, any case) names;
        InvalidToken unless it is one and verifies."""
        return self.read_return(self._local_token(address, RETURN_PREFIX))

    def read_return(self, token: str) -> str:
        """The message id a return-path token names, in any case; InvalidToken unless it
        verifies."""
        return self._read_mail_token(_KIND_RETURN, token)

    def unsubscribe_address(self, message_id: str, domain: str) -> str:
        """The address of one copy's `mailto:` unsubscribe (`u-<token>@domain`)."""
        token = self._mail_token(_KIND_UNSUBSCRIBE_MAIL, message_id)
        return f"{UNSUBSCRIBE_PREFIX}{token}@{domain}"

    def read_unsubscribe_address(self, address: str) -> str:
        """The message id that an unsubscribe mailto's address names (any case);
        InvalidToken unless it is one and verifies."""
        token = self._local_token(address, UNSUBSCRIBE_PREFIX)
        return self._read_mail_token(_KIND_UNSUBSCRIBE_MAIL, token)

    def unsubscribe_token(
        self, message_id: str, *, address: str, config_set: str, account: bool
    ) -> str:
        """The token of one copy's unsubscribe URL (`/u/<token>`)."""
        header = bytes([_VERSION << 4 | _KIND_UNSUBSCRIBE, self._signing_id]) + (
            message_id_to_bytes(message_id)
        )
        plain = (
            bytes([_SCOPE_ACCOUNT if account else 0])
            + config_set.encode("utf-8")
            + b"\x00"
            + address.encode("utf-8")
        )
        sealed = self._siv_keys()[self._signing_id][0].encrypt(plain, [header])
        return _b64encode(header + sealed)

    def read_unsubscribe(self, token: str) -> UnsubscribeToken:
        """What an unsubscribe token says; InvalidToken unless it verifies."""
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken
        raw = _b64decode(token)
        size = 2 + MESSAGE_ID_BYTES
        if len(raw) < size + _SIV_BYTES + 3 or raw[0] != _VERSION << 4 | _KIND_UNSUBSCRIBE:
            raise InvalidToken
        header, sealed = raw[:size], raw[size:]
        plain = None
        for key in self._siv_keys().get(header[1], []):
            try:
                plain = key.decrypt(sealed, [header])
            except InvalidTag:
                continue
        if plain is None:
            raise InvalidToken
        config_set, sep, address = plain[1:].partition(b"\x00")
        if not sep or plain[0] not in (0, _SCOPE_ACCOUNT):
            raise InvalidToken  # signed by pixelpost, so only by another version of it
        return UnsubscribeToken(
            message_id=message_id_from_bytes(header[2:]),
            address=address.decode("utf-8"),
            config_set=config_set.decode("utf-8"),
            account=plain[0] == _SCOPE_ACCOUNT,
        )

    def read_open(self, token: str) -> OpenToken:
        """What a pixel token says; InvalidToken unless it verifies."""
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken
        raw = _b64decode(token)
        header, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(header) != 2 + MESSAGE_ID_BYTES or header[0] != _VERSION << 4 | _KIND_OPEN:
            raise InvalidToken
        self._verify(header, mac, b"")
        return OpenToken(message_id=message_id_from_bytes(header[2:]))

    def read_click(self, path: str) -> ClickToken:
        """What a click token (`<signature>/<destination>`) says; InvalidToken unless it
        verifies."""
        if len(path) > _MAX_TOKEN_CHARS:
            raise InvalidToken
        signature, sep, encoded = path.partition("/")
        raw = _b64decode(signature)
        if not sep or len(raw) < 2 + MESSAGE_ID_BYTES + 2 + _MAC_BYTES:
            raise InvalidToken
        header, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if header[0] & ~_HTTPS != _VERSION << 4 | _KIND_CLICK:
            raise InvalidToken
        if "%" not in encoded:
            # Nothing was escaped, so the destination is canonical if nothing needed to be.
            if not encoded.isascii() or _ASCII_UNSAFE.search(encoded) or "//" in encoded:
                raise InvalidToken
            rest = encoded
        else:
            try:
                rest = unquote(encoded, errors="strict")
            except UnicodeDecodeError:
                raise InvalidToken from None
            if _encode_rest(rest) != encoded:
                raise InvalidToken
        self._verify(header, mac, rest.encode("utf-8"))
        pos = 2 + MESSAGE_ID_BYTES
        link_index, pos = _read_varint(header, pos)
        tags_length, pos = _read_varint(header, pos)
        if pos + tags_length != len(header):
            raise InvalidToken
        scheme = "https://" if header[0] & _HTTPS else "http://"
        return ClickToken(
            message_id=message_id_from_bytes(header[2 : 2 + MESSAGE_ID_BYTES]),
            link_index=link_index,
            url=scheme + rest,
            tags=_decode_tags(header[pos:]),
        )


class MessageSigner:
    """The tokens of one copy of a message (its key and id prepared once)."""

    def __init__(self, *, key: _Hmac, prefix: bytes) -> None:
        self._key = key
        self._prefix = prefix

    def open_token(self) -> str:
        header = bytes([_VERSION << 4 | _KIND_OPEN]) + self._prefix
        return _b64encode(header + self._key.mac(header, b""))

    def click_token(self, link_index: int, url: str, tags: Mapping[str, Sequence[str]]) -> str:
        https, rest = _split_scheme(url)
        encoded_tags = _encode_tags(tags) if tags else b""
        header = (
            bytes([_VERSION << 4 | _KIND_CLICK | (_HTTPS if https else 0)])
            + self._prefix
            + _varint(link_index)
            + _varint(len(encoded_tags))
            + encoded_tags
        )
        mac = self._key.mac(header, rest.encode("utf-8"))
        return f"{_b64encode(header + mac)}/{_encode_rest(rest)}"
