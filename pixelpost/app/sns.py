"""`pixelpost sns keygen`: make the RSA key SNS-compatible destinations sign with and
its self-signed certificate, which the tracker serves at the SigningCertURL; and the
check of `[sns]`'s files that `check-config` runs when such a destination is configured
(`serve` and `dispatch` refuse to start without them: pipeline.destinations.sns).

The key file is created with mode 0600 from the start (`pixelpost.app.dkim`'s writer);
the certificate is public, 0644.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pipeline.destinations.sns import read_signing_key
from pixelpost.app.dkim import write_key_file
from pixelpost.config import Config, SnsConfig, SnsDestination
from pixelpost.core import sns
from pixelpost.errors import ConfigError, KeyFileError, PixelpostError

BITS_DEFAULT = 2048
BITS_MAX = 4096
DAYS_DEFAULT = 3650
COMMON_NAME_DEFAULT = "pixelpost-sns"
CERTIFICATE_MODE = 0o644
_BACKDATE = datetime.timedelta(minutes=5)
"""A new certificate is valid from a little before now: a consumer whose clock is
behind still takes it."""


def sns_key_problems(config: Config) -> list[str]:
    """One line for what is wrong with `[sns]`'s key and certificate, when an
    SNS-compatible destination needs them; none otherwise."""
    if not any(isinstance(d, SnsDestination) for d in config.destinations.values()):
        return []
    try:
        read_signing_key(config.sns)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def new_key_and_certificate(
    *, bits: int, days: int, common_name: str, now: datetime.datetime
) -> tuple[bytes, bytes]:
    """A new RSA private key (PKCS#8 PEM) and a self-signed certificate of it (PEM)."""
    if not sns.MIN_RSA_BITS <= bits <= BITS_MAX:
        raise PixelpostError(f"--bits {bits}: a key has {sns.MIN_RSA_BITS} to {BITS_MAX} bits")
    if days < 1:
        raise PixelpostError(f"--days {days}: a certificate is valid for a day or more")
    if not common_name or len(common_name) > 64:
        raise PixelpostError(f"--common-name {common_name!r}: 1 to 64 characters")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = private.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string: quotes and backslashes escaped alike.
    return json.dumps(text, ensure_ascii=False)


def keygen(
    *,
    paths: SnsConfig,
    public_url: str,
    bits: int = BITS_DEFAULT,
    days: int = DAYS_DEFAULT,
    common_name: str = COMMON_NAME_DEFAULT,
    force: bool = False,
    stdout: TextIO,
) -> int:
    """Write a new key and certificate where `paths` says (their folders made as
    needed); refuse, before writing either, when one exists and not `force`. Print the
    files, the fingerprint, the SigningCertURL under `public_url` and the `[sns]` lines."""
    if not force:
        for path in (paths.key, paths.certificate):
            if path.exists():
                raise KeyFileError(
                    f"{path} exists: refusing to overwrite the SNS key or certificate "
                    "(--force replaces both)"
                )
    key_pem, certificate_pem = new_key_and_certificate(
        bits=bits, days=days, common_name=common_name, now=datetime.datetime.now(datetime.UTC)
    )
    for path in (paths.key, paths.certificate):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot make {path.parent}: {exc.strerror or exc}") from exc
    write_key_file(paths.key, key_pem, force=force)
    write_key_file(paths.certificate, certificate_pem, force=force)
    try:
        os.chmod(paths.certificate, CERTIFICATE_MODE)
    except OSError as exc:
        raise KeyFileError(f"cannot chmod {paths.certificate}: {exc.strerror or exc}") from exc
    key_path, certificate_path = paths.key.resolve(), paths.certificate.resolve()
    stdout.write(
        f"Wrote a new {bits}-bit RSA key to {key_path} (mode 0600)\n"
        f"and its self-signed certificate, valid {days} days, to {certificate_path}.\n"
        f"\nfingerprint:    {sns.fingerprint(certificate_pem)}\n"
        f"SigningCertURL: {sns.certificate_url(public_url, certificate_pem)}\n"
        "(the tracker serves it there when an SNS destination is configured; consumers "
        "fetch it over https only)\n"
        "\nand add to pixelpost's configuration:\n"
        "\n[sns]\n"
        f"key = {_toml_string(str(key_path))}\n"
        f"certificate = {_toml_string(str(certificate_path))}\n"
    )
    return 0
