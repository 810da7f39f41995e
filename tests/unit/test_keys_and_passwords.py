"""Signing keys, webhook secrets and password hashes."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from pixelpost.core.passwords import check_hash, hash_password, verify_password
from pixelpost.errors import KeyFileError
from pixelpost.keys import (
    decode_signing_key,
    decode_webhook_secret,
    generate_signing_key,
    generate_webhook_secret,
    load_or_create_key_file,
    signing_keys,
)


def test_password_hash_round_trip() -> None:
    hashed = hash_password("correct horse", log2_n=4)
    assert hashed.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsf", hashed)
    assert not verify_password("", hashed)
    assert hash_password("correct horse", log2_n=4) != hashed


def test_default_cost_is_memory_hard() -> None:
    hashed = hash_password("pw")
    assert hashed.startswith("$scrypt$ln=15,r=8,p=1$")
    assert verify_password("pw", hashed)


@pytest.mark.parametrize(
    "bad",
    ["", "plain", "$scrypt$ln=40,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "$2b$12$bcrypt"],
)
def test_malformed_hashes_never_verify(bad: str) -> None:
    with pytest.raises(ValueError):
        check_hash(bad)
    assert not verify_password("anything", bad)


def test_signing_keys() -> None:
    key = generate_signing_key()
    assert len(decode_signing_key(key)) == 32
    assert generate_signing_key() != key
    with pytest.raises(ValueError, match="32 bytes"):
        decode_signing_key("c2hvcnQ")
    with pytest.raises(ValueError, match="not a signing key"):
        decode_signing_key("not base64 at all!")


def test_webhook_secrets() -> None:
    secret = generate_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(decode_webhook_secret(secret)) == 32
    with pytest.raises(ValueError, match="whsec_"):
        decode_webhook_secret(secret.removeprefix("whsec_"))
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        decode_webhook_secret("whsec_c2hvcnQ=")


def test_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "signing.key"
    first = load_or_create_key_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == first
    assert signing_keys((), path) == (first,)
    configured = (generate_signing_key(),)
    assert signing_keys(configured, path) == configured
    assert list(path.parent.iterdir()) == [path]


def test_processes_racing_to_create_the_key_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_or_create_key_file(path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(results) == 8


def test_a_damaged_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text("garbage\n")
    with pytest.raises(KeyFileError, match="signing key file"):
        load_or_create_key_file(path)
    assert path.read_text() == "garbage\n"
