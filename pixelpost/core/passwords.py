"""Password hashes for SMTP AUTH users: scrypt from the standard library.

The hash is written in the PHC string format, `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, so
that its cost can be raised later without breaking existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

LOG2_N_DEFAULT = 15
"""scrypt cost 2**15 with r=8 uses 32 MiB per hash: slow for guessing, fine for logins."""
BLOCK_SIZE_DEFAULT = 8
PARALLELISM_DEFAULT = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_LOG2_N = 20
_MAX_MEMORY = 1 << 30

_PHC = re.compile(
    r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Parsed:
    log2_n: int
    block_size: int
    parallelism: int
    salt: bytes
    digest: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, parsed: _Parsed) -> bytes:
    return hashlib.scrypt(
        password,
        salt=parsed.salt,
        n=1 << parsed.log2_n,
        r=parsed.block_size,
        p=parsed.parallelism,
        maxmem=_MAX_MEMORY,
        dklen=len(parsed.digest),
    )


def hash_password(
    password: str,
    *,
    log2_n: int = LOG2_N_DEFAULT,
    block_size: int = BLOCK_SIZE_DEFAULT,
    parallelism: int = PARALLELISM_DEFAULT,
) -> str:
    """A new salted hash of `password`."""
    parsed = _Parsed(
        log2_n=log2_n,
        block_size=block_size,
        parallelism=parallelism,
        salt=secrets.token_bytes(_SALT_BYTES),
        digest=b"\0" * _HASH_BYTES,
    )
    digest = _scrypt(password.encode("utf-8"), parsed)
    return f"$scrypt$ln={log2_n},r={block_size},p={parallelism}${_b64(parsed.salt)}${_b64(digest)}"


def _parse(hashed: str) -> _Parsed:
    match = _PHC.fullmatch(hashed)
    if match is None:
        raise ValueError("not a hash from `pixelpost hash-password` ($scrypt$…)")
    log2_n, block_size, parallelism = int(match[1]), int(match[2]), int(match[3])
    if not 1 <= log2_n <= _MAX_LOG2_N or not 1 <= block_size <= 32 or not 1 <= parallelism <= 16:
        raise ValueError("scrypt parameters out of range")
    try:
        salt, digest = _unb64(match[4]), _unb64(match[5])
    except ValueError:
        raise ValueError("salt or hash is not base64") from None
    if len(digest) < 16:
        raise ValueError("hash too short")
    return _Parsed(
        log2_n=log2_n, block_size=block_size, parallelism=parallelism, salt=salt, digest=digest
    )


def check_hash(hashed: str) -> None:
    """Raise ValueError, saying why, if `hashed` is not a usable password hash."""
    _parse(hashed)


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches `hashed`, compared in constant time."""
    try:
        parsed = _parse(hashed)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password.encode("utf-8"), parsed), parsed.digest)
