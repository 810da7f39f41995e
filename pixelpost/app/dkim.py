"""`pixelpost dkim keygen|check`: make a signing key and print the DNS record to publish,
or look the published record up and say whether it is the key's (their options are in
`pixelpost.app.cli`; the key records themselves in `pixelpost.core.dkim`).

A key file is created with mode 0600 from the start, never written first and narrowed
after, so that no other user can read the key even for a moment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import TextIO

import dns.exception
import dns.rdtypes.txtbase
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pixelpost.core.dkim import DkimKey, key_bits, load_key, record_problem, txt_record
from pixelpost.errors import KeyFileError, PixelpostError

ALGORITHMS = ("rsa", "ed25519")
"""What `--type` takes."""
RSA_BITS_DEFAULT = 2048
RSA_BITS_MIN = 2048
"""New keys are 2048 bits or more, as RFC 8301 advises; 1024-bit keys still verify,
and `check-config` accepts them, but pixelpost does not make them."""
RSA_BITS_MAX = 4096
"""Verifiers need to take keys only up to 4096 bits (RFC 8301 3.2)."""
LOOKUP_TIMEOUT = 5.0
"""Seconds `check` waits for its DNS answer, retries included."""
TXT_STRING_MAX = 255
"""The longest string a TXT record holds (RFC 1035 3.3.14): a longer record is
published as several, which verifiers join (RFC 6376 3.6.2.2)."""
EDNS_PAYLOAD = 1232
"""Asked with EDNS, so that a 4096-bit key's record comes in one UDP answer."""
KEY_MODE = 0o600

_DOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)
_SELECTOR = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*"
)


def _checked_name(domain: str, selector: str) -> str:
    """`domain` lowercased; PixelpostError naming the option that is not a name."""
    lowered = domain.rstrip(".").lower()
    if not _DOMAIN.fullmatch(lowered):
        raise PixelpostError(f"--domain {domain!r} is not a domain name (example.com)")
    if not _SELECTOR.fullmatch(selector):
        raise PixelpostError(f"--selector {selector!r} is not a selector (letters, digits, -, .)")
    return lowered


def _new_key(algorithm: str, bits: int) -> bytes:
    """A new private key as PKCS#8 PEM."""
    if algorithm == "ed25519":
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
        )
    elif algorithm == "rsa":
        if not RSA_BITS_MIN <= bits <= RSA_BITS_MAX:
            raise PixelpostError(
                f"--bits {bits}: a new RSA key has {RSA_BITS_MIN} to {RSA_BITS_MAX} bits "
                "(RFC 8301)"
            )
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise PixelpostError(f"--type {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, pem: bytes, *, force: bool) -> None:
    """Write `pem` to `path`, created with mode 0600 and fsync'd. An existing file is
    kept (KeyFileError) unless `force`, which replaces it whole by a rename, so that the
    old key stays in place until the new one is complete, and the new file is 0600
    whatever mode the old had."""
    target = path if not force else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists: refusing to overwrite a key (--force replaces it)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        _write_all(fd, pem)
        if force:
            os.replace(target, path)
        _sync_folder(path.parent)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from exc


def zone_line(key: DkimKey) -> str:
    """The key's record as a zone file line, split into strings of at most 255."""
    record = txt_record(key)
    strings = " ".join(
        f'"{record[i : i + TXT_STRING_MAX]}"' for i in range(0, len(record), TXT_STRING_MAX)
    )
    return f"{key.selector}._domainkey.{key.domain}. IN TXT {strings}"


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string: quotes and backslashes escaped alike.
    return json.dumps(text, ensure_ascii=False)


def keygen(
    *,
    domain: str,
    selector: str,
    algorithm: str,
    bits: int,
    out: Path,
    force: bool,
    stdout: TextIO,
) -> int:
    """Write a new key to `out` and print the DNS record to publish and the lines to add
    to the configuration."""
    domain = _checked_name(domain, selector)
    pem = _new_key(algorithm, bits)
    write_key_file(out, pem, force=force)
    key = load_key(domain=domain, selector=selector, pem=pem)
    path = out.resolve()
    kind = f"{key_bits(key)}-bit RSA" if algorithm == "rsa" else "Ed25519"
    prefix = "" if algorithm == "rsa" else "ed25519_"
    stdout.write(
        f"Wrote a new {kind} key to {path} (mode 0600).\n"
        f"\nPublish this TXT record in the DNS of {domain}:\n\n"
        f"{zone_line(key)}\n"
        "\nand add to pixelpost's configuration"
        + (":\n" if algorithm == "rsa" else " (beside the RSA key: Ed25519 signs as well):\n")
        + f'\n[dkim.domains."{domain}"]\n'
        f"{prefix}selector = {_toml_string(selector)}\n"
        f"{prefix}key = {_toml_string(str(path))}\n"
        f"\nOnce the record is published: pixelpost dkim check -c FILE --domain {domain}\n"
    )
    return 0


def _resolver(nameserver: str | None, timeout: float) -> dns.resolver.Resolver:
    """The system's resolver, or one asking only `nameserver` (`host`, `host:port`,
    `[v6]:port`), which must be an IP address."""
    if nameserver is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as exc:
            raise PixelpostError(f"cannot read the system's DNS configuration: {exc}") from exc
    else:
        host, port = nameserver, 53
        found = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+):(\d+)", nameserver)
        if found:
            host = found[1] or found[3]
            port = int(found[2] or found[4] or 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise PixelpostError(
                f"--nameserver {nameserver!r} is not an IP address, with :PORT or without"
            ) from None
        if not 0 < port < 65536:
            raise PixelpostError(f"--nameserver {nameserver!r}: no such port")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    return resolver


def _published(resolver: dns.resolver.Resolver, name: str) -> list[str] | str:
    """The TXT records at `name`, each with its strings joined; or why there is none.
    PixelpostError when DNS could not be asked."""
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except dns.resolver.NXDOMAIN:
        return "no such name"
    except dns.resolver.NoAnswer:
        return "no TXT record at the name"
    except dns.exception.Timeout:
        raise PixelpostError(
            f"cannot look up {name}: no answer from {', '.join(map(str, resolver.nameservers))} "
            f"within {resolver.lifetime:g} s"
        ) from None
    except dns.exception.DNSException as exc:
        raise PixelpostError(f"cannot look up {name}: {exc}") from exc
    return [
        b"".join(rdata.strings).decode("utf-8", "replace")
        for rdata in answer
        if isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
    ]


def check(
    *,
    domain: str,
    selector: str,
    key: Path,
    nameserver: str | None,
    stdout: TextIO,
    timeout: float = LOOKUP_TIMEOUT,
) -> int:
    """Look up `<selector>._domainkey.<domain>` and say in one line whether it publishes
    the key in `key`: 0 when it does; 1 when it is missing, has no p=, is revoked or is
    another key. PixelpostError when the key cannot be read or DNS cannot be asked."""
    domain = _checked_name(domain, selector)
    try:
        pem = key.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the DKIM key {key}: {exc.strerror or exc}") from exc
    dkim_key = load_key(domain=domain, selector=selector, pem=pem)
    name = f"{selector}._domainkey.{domain}."
    records = _published(_resolver(nameserver, timeout), name)
    if isinstance(records, str):
        stdout.write(f"{name}: missing: {records}; publish the record of {key}\n")
        return 1
    problems = [record_problem(dkim_key, record) for record in records]
    if None in problems:
        bits = key_bits(dkim_key)
        stdout.write(f"{name}: matches {key} ({dkim_key.algorithm}, {bits} bits)\n")
        return 0
    if len(problems) == 1:
        stdout.write(f"{name}: the published record {problems[0]} (key file {key})\n")
    else:
        each = "; ".join(f"one {problem}" for problem in problems)
        count = len(problems)
        stdout.write(f"{name}: none of {count} TXT records publishes the key in {key}: {each}\n")
    return 1
