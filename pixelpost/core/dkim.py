"""DKIM (RFC 6376): signing each copy last, after its tracking rewrite, with RSA and
optionally Ed25519 (RFC 8463); reading and removing the signatures a message arrived
with; and the public key's DNS record, to publish and to check.

Pure: keys come in as PEM bytes and messages as bytes, nothing here opens a file or a
socket. Canonicalisation (relaxed/relaxed) is this module's own rather than dkimpy's,
for two reasons: importing `dkim` imports dnspython and `socket`, which the pure core
may not, and dkimpy canonicalises a body in one piece, several copies of a 25 MB
message at once. The tests hold both canonicalisations, and dkimpy's verifier, to the
same results. The private-key operations are `cryptography`'s: dkimpy's pure-Python RSA
costs 8 to 12 ms a copy where this costs under 1 (`bench/dkim.py`).

A message is canonicalised as it will be on the wire: aiosmtplib sends every bare LF
or CR as CRLF and ends the data with CRLF, so a signature made over those line endings
is one the receiver can verify.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)

from pixelpost.core.headers import (
    HeaderField,
    HeaderSection,
    parse_header_section,
    remove_fields,
)
from pixelpost.errors import PixelpostError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
"""The fields signed when present: those a receiver shows or acts on (RFC 6376 5.4.1,
RFC 8058 for the one-click unsubscribe). Never Received or Return-Path, which the next
hops add to."""
MIN_RSA_BITS = 1024
"""Shorter RSA keys are refused by verifiers (RFC 8301 3.2)."""
SIGNATURE_FIELD = "dkim-signature"
LINE_WIDTH = 78
"""Where signature fields are folded (RFC 5322 2.1.1's recommended line length)."""
BODY_CHUNK = 1 << 20
"""Bytes of a body canonicalised at a time (cut at the next line end): a 25 MB message
costs a few chunks' worth of memory, not several copies of itself."""

_SIGNED = frozenset(SIGNED_HEADERS)
_OTHER_KEYS: tuple[tuple[type, str], ...] = (
    (ec.EllipticCurvePrivateKey, "an EC"),
    (dsa.DSAPrivateKey, "a DSA"),
    (ed448.Ed448PrivateKey, "an Ed448"),
    (x25519.X25519PrivateKey, "an X25519"),
    (x448.X448PrivateKey, "an X448"),
)
_LINE_END = re.compile(rb"\r\n?|\n")
_SPACES = re.compile(rb"  +")
"""Runs of spaces, found by their literal start. Tabs become spaces first: a pattern
for runs of both (`[ \t]+`) is tried at every blank of the body, several times slower
on a newsletter's indentation."""
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WSP_ANY = re.compile(r"\s+")


class DkimError(PixelpostError):
    """A DKIM key cannot be used: it does not load, is too short, or is of a type DKIM
    does not sign with."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DkimKey:
    """One signing key: the private key that signs for `domain` under `selector`."""

    domain: str
    """d=, lowercased."""
    selector: str
    """s=: the public key is published at `<selector>._domainkey.<domain>`."""
    algorithm: Algorithm
    private_key: bytes = field(repr=False)
    """PEM: PKCS#8, or PKCS#1 for RSA. Kept out of repr so a logged record shows no
    secret."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureInfo:
    """What a DKIM-Signature field of a message claims, read leniently: a malformed tag
    reads as empty (or None), so that a caller still sees the message is signed."""

    domain: str
    """d=, lowercased; "" when missing."""
    selector: str
    algorithm: str
    headers: tuple[str, ...]
    """h=: the signed fields' names, lowercased, in the signature's order."""
    body_length: int | None
    """l=: how much of the body the signature covers; None when all of it."""
    start: int
    end: int
    """`message[start:end]` is the field, its folded lines and line break."""


def _load_private(pem: bytes) -> PrivateKey:
    """The key in `pem`; DkimError saying why it cannot sign."""
    if b"-----BEGIN CERTIFICATE" in pem:
        raise DkimError("a certificate, not a private key: DKIM needs the private key (PEM)")
    if b"-----BEGIN" not in pem:
        raise DkimError("not a PEM private key (no -----BEGIN line)")
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise DkimError("an encrypted private key: pixelpost reads unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimError(f"not a PEM private key that can be read ({exc})") from None
    if isinstance(loaded, rsa.RSAPrivateKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise DkimError(
                f"a {loaded.key_size}-bit RSA key: DKIM needs {MIN_RSA_BITS} bits or more "
                "(RFC 8301), 2048 advised"
            )
        return loaded
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return loaded
    kind = next((name for cls, name in _OTHER_KEYS if isinstance(loaded, cls)), "another")
    raise DkimError(f"{kind} key: DKIM signs with RSA or Ed25519 keys only")


def _algorithm(private: PrivateKey) -> Algorithm:
    return "rsa-sha256" if isinstance(private, rsa.RSAPrivateKey) else "ed25519-sha256"


def load_key(*, domain: str, selector: str, pem: bytes) -> DkimKey:
    """A signing key for `domain`, its algorithm read from the key; DkimError naming the
    selector and why the key cannot sign."""
    domain = domain.rstrip(".").lower()
    try:
        private = _load_private(pem)
    except DkimError as exc:
        raise DkimError(f"DKIM key {selector}._domainkey.{domain}: {exc}") from None
    return DkimKey(
        domain=domain, selector=selector, algorithm=_algorithm(private), private_key=pem
    )


def key_bits(key: DkimKey) -> int:
    """The key's length in bits (256 for Ed25519)."""
    private = _load_private(key.private_key)
    return private.key_size if isinstance(private, rsa.RSAPrivateKey) else 256


def _public_bytes(private: PrivateKey) -> bytes:
    """What p= holds: the SubjectPublicKeyInfo DER for RSA (RFC 6376 3.6.1), the raw
    32 bytes for Ed25519 (RFC 8463 4)."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def txt_record(key: DkimKey) -> str:
    """The TXT record to publish at `<selector>._domainkey.<domain>`, as one string."""
    private = _load_private(key.private_key)
    kind = "rsa" if isinstance(private, rsa.RSAPrivateKey) else "ed25519"
    p = base64.b64encode(_public_bytes(private)).decode("ascii")
    return f"v=DKIM1; k={kind}; p={p}"


def record_tags(txt: str) -> dict[str, str]:
    """The tags of a published key record (RFC 6376 3.6.1): a zone file's quoted strings
    are joined first, whitespace around tags and inside p= is dropped. ValueError for a
    tag that is not `name=value` or a tag given twice, which make the record invalid."""
    text = txt.strip()
    if text.startswith('"'):
        text = "".join(re.sub(r"\\(.)", r"\1", part) for part in _QUOTED.findall(text))
    tags: dict[str, str] = {}
    for spec in text.split(";"):
        if not spec.strip():
            continue
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{spec.strip()!r} is not a tag=value")
        if name in tags:
            raise ValueError(f"the tag {name}= appears twice")
        tags[name] = _WSP_ANY.sub("", value) if name == "p" else value.strip()
    return tags


def record_problem(key: DkimKey, txt: str) -> str | None:  # noqa: PLR0911 (one return per problem)
    """Why the published record `txt` does not publish `key`, in a few words (the
    record "has no p= tag", "is revoked (empty p=)", "does not match the key" …), or
    None when it does."""
    try:
        tags = record_tags(txt)
    except ValueError as exc:
        return f"is not a valid key record: {exc}"
    if tags.get("v", "DKIM1") != "DKIM1":
        return f"is not a DKIM key record (v={tags['v']})"
    if "p" not in tags:
        return "has no p= tag"
    if not tags["p"]:
        return "is revoked (empty p=)"
    private = _load_private(key.private_key)
    kind = "rsa" if isinstance(private, rsa.RSAPrivateKey) else "ed25519"
    if tags.get("k", "rsa").lower() != kind:
        return f"is for k={tags.get('k', 'rsa')}, the key is {kind}"
    if "h" in tags and "sha256" not in (h.strip() for h in tags["h"].split(":")):
        return f"allows only h={tags['h']}, pixelpost signs with sha256"
    try:
        published = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        return "has a p= that is not base64"
    ours = _public_bytes(private)
    if published == ours:
        return None
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey) and published == public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    ):
        return None  # the bare RSAPublicKey, which some tools publish and verifiers take
    return "does not match the key (p= is another public key)"


def public_key_matches(key: DkimKey, txt: str) -> bool:
    """Whether the published record `txt` is `key`'s public key, valid for signing."""
    return record_problem(key, txt) is None


def relaxed_header(raw: bytes) -> bytes:
    """One header field (`name: value`, folded, with its line break) canonicalised
    "relaxed" (RFC 6376 3.4.2), ending with CRLF."""
    name, _, value = raw.partition(b":")
    value = _SPACES.sub(b" ", _LINE_END.sub(b"", value).replace(b"\t", b" ")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body_hash(data: bytes, start: int = 0, *, chunk_size: int = BODY_CHUNK) -> bytes:
    """SHA-256 of `data[start:]` canonicalised "relaxed" (RFC 6376 3.4.4), chunk by
    chunk: blanks at line ends dropped, runs of blanks made one space, empty lines at the
    end ignored, line ends CRLF (as sent), and a non-empty body ending with CRLF."""
    digest = hashlib.sha256()
    held = 0  # line ends not hashed yet: they count only if a non-empty line follows
    seen = False
    size = len(data)
    pos = start
    while pos < size:
        cut = data.find(b"\n", pos + chunk_size - 1) if pos + chunk_size < size else -1
        end = size if cut < 0 else cut + 1
        chunk = data[pos:end]
        if end == size and not chunk.endswith((b"\n", b"\r")):
            chunk += b"\r\n"  # the SMTP client ends the data so, and so its last line
        # Each pass only when the chunk needs it: most bodies are CRLF, and base64 has
        # no blanks at all. Once every run of blanks is one space, those at line ends
        # are exactly the spaces before CRLF.
        crlf = chunk.count(b"\r\n")
        if crlf != chunk.count(b"\n") or crlf != chunk.count(b"\r"):
            chunk = _LINE_END.sub(b"\r\n", chunk)
        if b"\t" in chunk:
            chunk = chunk.replace(b"\t", b" ")
        if b"  " in chunk:
            chunk = _SPACES.sub(b" ", chunk)
        chunk = chunk.replace(b" \r\n", b"\r\n")
        text = chunk.rstrip(b"\r\n")
        if text:
            digest.update(b"\r\n" * held)
            digest.update(text)
            held = 0
            seen = True
        held += (len(chunk) - len(text)) // 2
        pos = end
    if seen:
        digest.update(b"\r\n")
    return digest.digest()


def _tags(value: str) -> dict[str, str]:
    """A signature's tag=value list, leniently: a spec without `=` is skipped."""
    tags: dict[str, str] = {}
    for spec in value.split(";"):
        name, sep, tag_value = spec.partition("=")
        if sep:
            tags.setdefault(name.strip(), _WSP_ANY.sub(" ", tag_value).strip())
    return tags


def _signature_info(data: bytes, found: HeaderField) -> SignatureInfo:
    tags = _tags(found.value(data))
    length = tags.get("l", "")
    names = tags.get("h", "")
    return SignatureInfo(
        domain=tags.get("d", "").lower(),
        selector=tags.get("s", ""),
        algorithm=tags.get("a", "").lower(),
        headers=tuple(n.strip().lower() for n in names.split(":")) if names else (),
        body_length=int(length) if length.isdigit() else None,
        start=found.start,
        end=found.end,
    )


def dkim_signatures(message: bytes) -> list[SignatureInfo]:
    """The DKIM-Signature fields of the message's header section, top to bottom."""
    section = parse_header_section(message)
    return [_signature_info(message, f) for f in section.find(SIGNATURE_FIELD)]


def without_signatures(message: bytes) -> bytes:
    """The message without its DKIM-Signature fields, every other byte as it was."""
    section = parse_header_section(message)
    return remove_fields(message, list(section.find(SIGNATURE_FIELD)))


def _ascii_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def from_domain(message: bytes) -> str | None:
    """The domain of the first address of the message's first From field, lowercased
    and in A-labels; None without one."""
    section = parse_header_section(message)
    author = next(section.find("from"), None)
    if author is None:
        return None
    for _, address in email.utils.getaddresses([author.value(message)]):
        local, at, domain = address.rpartition("@")
        if at and local and domain:
            return _ascii_domain(domain)
    return None


class _Lines:
    """A header field folded at LINE_WIDTH as it is written: whole words move to the
    next line, base64 breaks anywhere (RFC 6376 allows FWS in it)."""

    def __init__(self, start: str) -> None:
        self._lines = [start]

    def word(self, text: str, *, space: bool = True) -> None:
        sep = " " if space else ""
        if len(self._lines[-1]) + len(sep) + len(text) <= LINE_WIDTH:
            self._lines[-1] += sep + text
        else:
            self._lines.append(" " + text)

    def base64(self, text: str) -> None:
        while text:
            room = LINE_WIDTH - len(self._lines[-1])
            if room <= 0:
                self._lines.append(" ")
                room = LINE_WIDTH - 1
            self._lines[-1] += text[:room]
            text = text[room:]

    def text(self) -> str:
        return "\r\n".join(self._lines)


def _header_words(lines: _Lines, tags: Sequence[tuple[str, str]], names: Sequence[str]) -> None:
    for tag, value in tags:
        lines.word(f"{tag}={value};")
    for index, name in enumerate(names):
        last = index == len(names) - 1
        text = f"{'h=' if index == 0 else ''}{name}{';' if last else ':'}"
        lines.word(text, space=index == 0)


def _selected(data: bytes, section: HeaderSection, names: Iterable[str]) -> bytes:
    """The canonical fields `names` (h=) select, as a verifier selects them: for each
    name, the last instance not yet taken; none left selects nothing (RFC 6376 5.4.2)."""
    instances: dict[str, list[bytes]] = {}
    for f in section.fields:
        lower = f.name.lower()
        if lower in _SIGNED:
            instances.setdefault(lower, []).append(relaxed_header(data[f.start : f.end]))
    picked = []
    for name in names:
        remaining = instances.get(name.lower())
        if remaining:
            picked.append(remaining.pop())
    return b"".join(picked)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Loaded:
    key: DkimKey
    private: PrivateKey


class Signer:
    """Signs copies with the configured keys: the From domain picks them (a key for
    example.com signs for news.example.com too), Ed25519 first when there is one, then
    RSA, which every receiver verifies."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        """Keys for several domains: per domain one RSA key and optionally one Ed25519
        key. DkimError names a key that does not load and a domain with keys of the same
        algorithm twice, or with Ed25519 alone (a receiver that does not know Ed25519
        would see unsigned mail)."""
        by_domain: dict[str, dict[Algorithm, _Loaded]] = {}
        # One key often signs for several domains; loading an RSA key takes milliseconds.
        privates: dict[bytes, PrivateKey] = {}
        for key in keys:
            domain = _ascii_domain(key.domain)
            try:
                private = privates.get(key.private_key) or _load_private(key.private_key)
            except DkimError as exc:
                raise DkimError(f"DKIM key {key.selector}._domainkey.{domain}: {exc}") from None
            privates[key.private_key] = private
            algorithm = _algorithm(private)
            held = by_domain.setdefault(domain, {})
            if algorithm in held:
                raise DkimError(f"DKIM: two {algorithm} keys for {domain}")
            held[algorithm] = _Loaded(key=key, private=private)
        for domain, held in by_domain.items():
            if "rsa-sha256" not in held:
                raise DkimError(f"DKIM: {domain} has an Ed25519 key but no RSA key")
        self._keys = {
            domain: tuple(held[a] for a in ("ed25519-sha256", "rsa-sha256") if a in held)
            for domain, held in by_domain.items()
        }

    def covering(self, domain: str) -> str | None:
        """The configured domain whose keys sign mail From `domain` (A-labels): itself,
        else its nearest configured parent; None when none does."""
        labels = domain.split(".")
        for index in range(len(labels)):
            candidate = ".".join(labels[index:])
            if candidate in self._keys:
                return candidate
        return None

    def key_domain(self, message: bytes) -> str | None:
        """The configured domain whose keys sign `message`: its From domain, else the
        nearest configured parent of it; None when no key covers it."""
        domain = from_domain(message)
        return None if domain is None else self.covering(domain)

    def sign(self, message: bytes, *, now: int | None = None) -> bytes:
        """`message` with its DKIM-Signature fields prepended (relaxed/relaxed, every
        SIGNED_HEADERS field present, From once more so that no second From can be
        added). A message no key covers is returned as it is, the same object."""
        domain = self.key_domain(message)
        if domain is None:
            return message
        section = parse_header_section(message)
        names = [f.name for f in section.fields if f.name.lower() in _SIGNED]
        names.append(next(n for n in names if n.lower() == "from"))
        signed = _selected(message, section, names)
        body_hash = base64.b64encode(relaxed_body_hash(message, section.body_offset))
        stamp = str(int(time.time()) if now is None else now)
        fields = [
            _signature(loaded, signed, names, body_hash.decode("ascii"), stamp)
            for loaded in self._keys[domain]
        ]
        return b"".join((*fields, message))


def _signature(
    loaded: _Loaded, signed: bytes, names: Sequence[str], body_hash: str, stamp: str
) -> bytes:
    """One DKIM-Signature field, folded, with CRLF. What is signed is the selected
    fields, then this field with an empty b= as it is written, canonicalised and
    without its line break (RFC 6376 3.7); the value of b= then follows b=, so that the
    signed text stays the field's start."""
    key = loaded.key
    lines = _Lines("DKIM-Signature:")
    _header_words(
        lines,
        [
            ("v", "1"),
            ("a", _algorithm(loaded.private)),  # read from the key, not from its label
            ("c", "relaxed/relaxed"),
            ("d", _ascii_domain(key.domain)),
            ("s", key.selector),
            ("t", stamp),
        ],
        names,
    )
    lines.word(f"bh={body_hash};")
    lines.word("b=")
    unsigned = lines.text().encode("ascii")
    data = signed + relaxed_header(unsigned)[:-2]
    private = loaded.private
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:  # RFC 8463 3: Ed25519 signs the SHA-256 of the data, not the data
        signature = private.sign(hashlib.sha256(data).digest())
    lines.base64(base64.b64encode(signature).decode("ascii"))
    return (lines.text() + "\r\n").encode("ascii")
