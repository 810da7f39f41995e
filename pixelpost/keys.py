"""Signing keys for tracking links and secrets for webhooks.

A signing key is 32 random bytes written in unpadded base64url. When the configuration
lists none, one is generated on first start and kept in `signing.key_file`, so that links
keep verifying across restarts.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from pixelpost.errors import KeyFileError

SIGNING_KEY_BYTES = 32
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_WEBHOOK_SECRET_BYTES = 32
_WEBHOOK_SECRET_RANGE = (24, 64)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def generate_signing_key() -> str:
    """A fresh signing key."""
    return base64.urlsafe_b64encode(secrets.token_bytes(SIGNING_KEY_BYTES)).decode().rstrip("=")


def decode_signing_key(text: str) -> bytes:
    """The key bytes of `text`; ValueError if it is not a key from `pixelpost keygen`."""
    try:
        if not _BASE64URL.fullmatch(text):
            raise ValueError(text)
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a signing key (base64url, from `pixelpost keygen`)") from None
    if len(raw) < SIGNING_KEY_BYTES:
        raise ValueError(
            f"a signing key needs {SIGNING_KEY_BYTES} bytes of randomness, this one has {len(raw)}"
        )
    return raw


def generate_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (`whsec_<base64>`)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(
        secrets.token_bytes(_WEBHOOK_SECRET_BYTES)
    ).decode("ascii")


def decode_webhook_secret(text: str) -> bytes:
    """The key bytes of a `whsec_` secret; ValueError if it is not one."""
    if not text.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"not a webhook secret (it must start with {WEBHOOK_SECRET_PREFIX})")
    try:
        raw = base64.b64decode(text.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a webhook secret (base64 after whsec_)") from None
    low, high = _WEBHOOK_SECRET_RANGE
    if not low <= len(raw) <= high:
        raise ValueError(f"a webhook secret holds {low} to {high} bytes, this one {len(raw)}")
    return raw


def load_or_create_key_file(path: Path) -> str:
    """The signing key kept in `path`, generated (mode 0600, fsync'd) if it is missing."""
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        return _create_key_file(path, generate_signing_key(), load_or_create_key_file)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read signing key file {path}: {exc}") from exc
    try:
        decode_signing_key(text)
    except ValueError as exc:
        raise KeyFileError(f"signing key file {path}: {exc}") from None
    return text


API_TOKEN_MIN_LENGTH = 16


def load_or_create_api_token(path: Path) -> str:
    """The API token kept in `path` (for the built-in defaults, which have no
    `tracker.api_token`), generated (mode 0600, fsync'd) if it is missing."""
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        return _create_key_file(path, secrets.token_urlsafe(32), load_or_create_api_token)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read API token file {path}: {exc}") from exc
    if len(text) < API_TOKEN_MIN_LENGTH:
        raise KeyFileError(
            f"API token file {path}: a token needs at least {API_TOKEN_MIN_LENGTH} characters"
        )
    return text


def _create_key_file(path: Path, key: str, load: Callable[[Path], str]) -> str:
    # Written under a temporary name and linked into place: the link fails if another
    # process got there first (whose key `load` reads), and nobody ever reads a
    # half-written key.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{key}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load(path)
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc}") from exc
    return key


def signing_keys(configured: tuple[str, ...], key_file: Path) -> tuple[str, ...]:
    """The keys that sign (the first) and verify (all) links, newest first: the configured
    ones, or else the one kept in `key_file`."""
    return configured or (load_or_create_key_file(key_file),)
