"""DKIM signing, held to an independent verifier: every signature pixelpost makes
verifies with dkimpy (its DNS answered from the test's records), and stops verifying
once a byte of the body or of a signed field changes."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import dkim
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpost.core.dkim import (
    BODY_CHUNK,
    LINE_WIDTH,
    SIGNED_HEADERS,
    DkimError,
    DkimKey,
    Signer,
    dkim_signatures,
    from_domain,
    key_bits,
    load_key,
    public_key_matches,
    record_problem,
    record_tags,
    relaxed_body_hash,
    relaxed_header,
    txt_record,
    without_signatures,
)
from pixelpost.core.headers import parse_header_section
from pixelpost.errors import PixelpostError
from tests.conftest import FIXTURES

NOW = 1_700_000_000

RSA_512 = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOgIBAAJBANlFJpnwKv0qkt5/9F0FetEsRasV2PlYgorlcTDIGYvsjRlg7Qwd
Sga6BWTqj0gIxipcmL7KglkFi9ZFoo/chd0CAwEAAQJATelDL151O/WhVxJRQW4u
nYWfsfsSpE99+GrQjSqkJo1Se1vW4k7NMKxvG0zyZR/LVe+xJWl7wIOH+TBmvYwc
wQIhAPy4U9cug7D9dh2LSxRz8GfckIkaCevnb3LzkBZqDyBRAiEA3BcKHq00g8oU
AsfmM5Na6N4kWWZknW/n2x0SEx1JFc0CIFoQZvC9BvnAmqOUzMERQJADLw9tVDPa
WwGgg605RwLBAiEApcfA+qxy0xZjDlkuoAjNwHybmq+S+DfzyEtUcwtrIr0CICfB
nHUcMH0HoXFbL43fbcJ1fdWY3D1fB+j3C8Vc3UVO
-----END RSA PRIVATE KEY-----
"""
"""A throwaway 512-bit key (cryptography no longer makes keys that short)."""


@functools.cache
def rsa_pem(bits: int = 2048) -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.cache
def ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.cache
def rsa_key(domain: str = "example.com", selector: str = "s1", bits: int = 2048) -> DkimKey:
    return load_key(domain=domain, selector=selector, pem=rsa_pem(bits))


@functools.cache
def ed_key(domain: str = "example.com", selector: str = "e1") -> DkimKey:
    return load_key(domain=domain, selector=selector, pem=ed25519_pem())


@functools.cache
def record_of(pem: bytes) -> str:
    """The key's TXT record, made once: loading an RSA key costs cryptography ~20 ms."""
    return txt_record(load_key(domain="example.com", selector="s", pem=pem))


def dnsfunc(*keys: DkimKey) -> Callable[..., bytes | None]:
    """dkimpy's DNS lookup, answered from `keys`' records."""
    records = {
        f"{k.selector}._domainkey.{k.domain}.".encode(): record_of(k.private_key).encode()
        for k in keys
    }

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def wire(message: bytes) -> bytes:
    """The message as aiosmtplib sends it: every line end CRLF, the data ending with one."""
    sent = re.sub(rb"\r\n|\n|\r", b"\r\n", message)
    return sent if sent.endswith(b"\r\n") else sent + b"\r\n"


def verified(message: bytes, *keys: DkimKey) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of `message`, top to bottom."""
    results = []
    for index in range(len(dkim_signatures(message))):
        try:
            ok = dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc(*keys))
        except dkim.DKIMException:
            ok = False
        results.append(bool(ok))
    return results


@functools.cache
def dual_signer() -> Signer:
    return Signer([ed_key(), rsa_key()])


def make_message(
    *,
    sender: str = "News <news@example.com>",
    body: str = "Hello,\n\nthe  newsletter  \t of the week.\n\n\n",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "reader@example.org"
    message["Subject"] = "This week"
    message["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    message["Message-ID"] = "<week-46@example.com>"
    for name, value in extra:
        message[name] = value
    message.set_content(body)
    return message.as_bytes(policy=SMTP)


# Round trips


@pytest.mark.parametrize("bits", [1024, 2048, 4096])
def test_rsa_signatures_verify(bits: int) -> None:
    key = rsa_key(bits=bits)
    message = make_message()
    signed = Signer([key]).sign(message, now=NOW)

    assert signed.endswith(message)
    assert verified(signed, key) == [True]
    assert dkim.verify(signed, dnsfunc=dnsfunc(key))
    [info] = dkim_signatures(signed)
    assert (info.domain, info.selector, info.algorithm) == ("example.com", "s1", "rsa-sha256")
    assert key_bits(key) == bits


def test_ed25519_signatures_verify() -> None:
    key = ed_key()
    rsa = rsa_key()
    signed = Signer([rsa, key]).sign(make_message(), now=NOW)

    ed_info, rsa_info = dkim_signatures(signed)
    assert ed_info.algorithm == "ed25519-sha256"
    assert rsa_info.algorithm == "rsa-sha256"
    assert verified(signed, key, rsa) == [True, True]
    assert key_bits(key) == 256


def test_dual_signing_puts_ed25519_first_and_both_break_together() -> None:
    ed, rsa = ed_key(), rsa_key()
    message = make_message()
    signed = Signer([rsa, ed]).sign(message, now=NOW)
    assert signed.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert verified(signed, ed, rsa) == [True, True]

    body_changed = signed.replace(b"of the week", b"of the weak")
    assert verified(body_changed, ed, rsa) == [False, False]
    subject_changed = signed.replace(b"Subject: This week", b"Subject: This weak")
    assert verified(subject_changed, ed, rsa) == [False, False]


def test_one_byte_changed_anywhere_signed_fails() -> None:
    key = rsa_key()
    message = make_message(extra=(("X-Mailer", "tests"),))
    signed = Signer([key]).sign(message, now=NOW)
    body = signed.index(b"\r\n\r\n") + 4

    for at in range(body, len(signed) - 2, 7):
        if signed[at : at + 1] in (b" ", b"\t", b"\r", b"\n"):
            continue  # relaxed canonicalisation forgives blanks, by design
        changed = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :]
        assert verified(changed, key) == [False], at
    # An unsigned field may change on the way (a list adding its own), a signed may not.
    assert verified(signed.replace(b"X-Mailer: tests", b"X-Mailer: other"), key) == [True]
    assert verified(signed.replace(b"<week-46@", b"<week-47@"), key) == [False]


def test_the_time_and_folding_of_the_field() -> None:
    key = rsa_key(bits=4096)
    signed = Signer([ed_key(), key]).sign(make_message(), now=NOW)
    header = signed[: signed.index(b"\r\nFrom:") + 2]

    assert b"t=1700000000;" in header
    assert b"c=relaxed/relaxed;" in header
    lines = header.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= LINE_WIDTH for line in lines)
    assert all(line.startswith((b"DKIM-Signature:", b" ")) for line in lines[:-1])
    assert b"\n" not in header.replace(b"\r\n", b"")


def test_signing_is_repeatable_for_one_time() -> None:
    signer = Signer([rsa_key(), ed_key()])
    message = make_message()
    # RSA PKCS#1 v1.5 and Ed25519 are deterministic: same message and time, same bytes.
    assert signer.sign(message, now=NOW) == signer.sign(message, now=NOW)
    assert signer.sign(message, now=NOW) != signer.sign(message, now=NOW + 1)


# What is signed


def test_from_is_oversigned_so_a_second_from_breaks_it() -> None:
    key = rsa_key()
    signed = Signer([key]).sign(make_message(), now=NOW)
    [info] = dkim_signatures(signed)
    # h= lists From once more than the message has it: an RFC 6376 verifier then hashes
    # an empty field for it, and a From added anywhere fills it. (dkimpy adds From to h=
    # on its own too, so its verdicts below would hold without; the count proves it.)
    assert info.headers.count("from") == 2
    assert verified(signed, key) == [True]

    end = signed.index(b"\r\nFrom:") + 2
    above = signed[:end] + b"From: attacker@evil.example\r\n" + signed[end:]
    below = signed.replace(b"\r\n\r\n", b"\r\nFrom: attacker@evil.example\r\n\r\n", 1)
    assert verified(above, key) == [False]
    assert verified(below, key) == [False]


def test_each_listed_header_is_signed_when_present() -> None:
    key = rsa_key()
    extra = (
        ("Cc", "copy@example.org"),
        ("List-Unsubscribe", "<https://example.com/u/1>, <mailto:u@example.com>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Received", "from somewhere by here"),
        ("X-Mailer", "tests"),
    )
    signed = Signer([key]).sign(make_message(extra=extra), now=NOW)
    [info] = dkim_signatures(signed)

    assert sorted(info.headers) == sorted([*SIGNED_HEADERS, "from"])
    assert verified(signed, key) == [True]
    fields = parse_header_section(signed).fields
    changed_names = []
    for field in fields:
        name = field.name.lower()
        after_colon = field.start + len(field.name) + 1
        changed = signed[:after_colon] + b" X" + signed[after_colon:]
        if name in SIGNED_HEADERS:
            assert verified(changed, key) == [False], name
            changed_names.append(name)
        elif name in ("received", "x-mailer"):
            assert verified(changed, key) == [True], name
    assert sorted(changed_names) == sorted(SIGNED_HEADERS)


def test_headers_absent_are_not_listed_and_names_keep_their_case() -> None:
    message = b"FROM: a@example.com\r\nsubject: hi\r\n\r\nbody\r\n"
    key = rsa_key()
    signed = Signer([key]).sign(message, now=NOW)
    assert b"h=FROM:subject:FROM;" in signed
    assert verified(signed, key) == [True]


def test_every_occurrence_of_a_repeated_field_is_signed() -> None:
    key = ed_key()
    message = (
        b"From: a@example.com\r\nTo: one@example.org\r\nSubject: s\r\n"
        b"To: two@example.org\r\n\r\nbody\r\n"
    )
    signer = Signer([rsa_key(), key])
    signed = signer.sign(message, now=NOW)
    assert dkim_signatures(signed)[0].headers == ("from", "to", "subject", "to", "from")
    assert verified(signed, key, rsa_key()) == [True, True]
    assert verified(signed.replace(b"one@", b"uno@"), key, rsa_key()) == [False, False]
    assert verified(signed.replace(b"two@", b"dos@"), key, rsa_key()) == [False, False]


# Which key signs


def test_a_parent_domain_covers_subdomains_and_the_nearest_wins() -> None:
    parent = rsa_key("example.com", "p1")
    news = rsa_key("news.example.com", "n1")
    signer = Signer([parent, news])

    deep = make_message(sender="a@x.y.example.com")
    assert signer.key_domain(deep) == "example.com"
    signed = signer.sign(deep, now=NOW)
    assert [i.domain for i in dkim_signatures(signed)] == ["example.com"]
    assert verified(signed, parent, news) == [True]

    letter = make_message(sender="Letters <hi@Deep.NEWS.Example.COM.>")
    assert signer.key_domain(letter) == "news.example.com"
    assert [i.selector for i in dkim_signatures(signer.sign(letter))] == ["n1"]


def test_a_message_no_key_covers_is_returned_as_it_came() -> None:
    signer = Signer([rsa_key("example.com")])
    for sender in ("a@example.org", "a@notexample.com", "a@com"):
        message = make_message(sender=sender)
        assert signer.key_domain(message) is None
        assert signer.sign(message) is message
    no_from = b"To: a@example.com\r\n\r\nbody\r\n"
    assert signer.sign(no_from) is no_from
    message = make_message()
    assert Signer([]).sign(message) is message


def test_the_from_domain_is_read_as_mail_readers_read_it() -> None:
    assert from_domain(b'From: "a@other.org" <Me@Example.COM>\r\n\r\n') == "example.com"
    assert from_domain(b"From: =?utf-8?q?Caf=C3=A9?= <c@example.com>\r\n\r\n") == "example.com"
    assert from_domain(b"From:\r\n\tme@example.com (folded)\r\n\r\n") == "example.com"
    assert from_domain("From: a@bücher.example\r\n\r\n".encode()) == "xn--bcher-kva.example"
    assert from_domain(b"From: nobody\r\n\r\n") is None
    assert from_domain(b"Subject: no from\r\n\r\n") is None


def test_signer_refuses_keys_it_cannot_use_together() -> None:
    with pytest.raises(DkimError, match=r"two rsa-sha256 keys for example\.com"):
        Signer([rsa_key(selector="a"), rsa_key(selector="b")])
    with pytest.raises(DkimError, match=r"example\.com has an Ed25519 key but no RSA key"):
        Signer([ed_key()])
    bad = DkimKey(domain="example.com", selector="s1", algorithm="rsa-sha256", private_key=b"x")
    with pytest.raises(DkimError, match=r"s1\._domainkey\.example\.com: not a PEM"):
        Signer([bad])


# Reading signatures


def test_dkim_signatures_reads_folded_fields() -> None:
    field = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.COM;\r\n"
        b"\ts=sel; c=relaxed/simple; l=123; h=From : To:\r\n"
        b"  Subject:\r\n\tDate; bh=abc=; b=ab\r\n cd\r\n"
    )
    message = b"Received: x\r\n" + field + b"DKIM-Signature: d=other.org; h=from\r\n\r\nbody\r\n"
    first, second = dkim_signatures(message)

    assert (first.domain, first.selector, first.algorithm) == ("example.com", "sel", "rsa-sha256")
    assert first.headers == ("from", "to", "subject", "date")
    assert first.body_length == 123
    assert message[first.start : first.end] == field
    assert (second.domain, second.headers, second.body_length) == ("other.org", ("from",), None)
    assert second.selector == ""
    assert dkim_signatures(b"From: a@b\r\n\r\nDKIM-Signature: in the body\r\n") == []


def test_without_signatures_removes_every_signature_and_nothing_else() -> None:
    message = make_message()
    twice = Signer([ed_key(), rsa_key()]).sign(Signer([rsa_key(selector="x")]).sign(message))
    assert len(dkim_signatures(twice)) == 3
    assert without_signatures(twice) == message

    inside = message.replace(b"To:", b"DKIM-Signature: v=1; d=a.example\r\nTo:", 1)
    assert without_signatures(inside) == message
    assert without_signatures(message) is message


# Key records and keys


@pytest.mark.parametrize("make", [rsa_key, ed_key])
def test_txt_record_publishes_the_key(make: Callable[[], DkimKey]) -> None:
    key = make()
    record = txt_record(key)
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    assert record.startswith(f"v=DKIM1; k={kind}; p=")
    tags = record_tags(record)
    if kind == "ed25519":
        assert len(base64.b64decode(tags["p"])) == 32  # the raw key, RFC 8463
    assert public_key_matches(key, record)
    # As a zone file writes it: split into strings, with blanks about.
    p = tags["p"]
    split = f'"v=DKIM1;  k={kind} ; " "p={p[:40]}" "{p[40:60]} {p[60:]};"'
    assert public_key_matches(key, split)
    assert public_key_matches(key, record.replace("p=", "t=y; p=") + "; s=email")


def test_record_problem_names_what_is_wrong() -> None:
    key = rsa_key()
    other = txt_record(rsa_key(bits=1024))
    p = record_tags(txt_record(key))["p"]
    cases = {
        other: "does not match the key",
        "v=DKIM1; k=rsa; p=": "is revoked (empty p=)",
        "v=DKIM1; k=rsa": "has no p= tag",
        f"v=DKIM1; k=ed25519; p={p}": "is for k=ed25519, the key is rsa",
        f"v=spf1; p={p}": "is not a DKIM key record (v=spf1)",
        f"v=DKIM1; h=sha1; p={p}": "allows only h=sha1",
        "v=DKIM1; p=!!!": "has a p= that is not base64",
        f"v=DKIM1; p={p}; p={p}": "the tag p= appears twice",
        "v=DKIM1; junk; p=x": "'junk' is not a tag=value",
    }
    for record, problem in cases.items():
        found = record_problem(key, record)
        assert found is not None, record
        assert problem in found, record
        assert not public_key_matches(key, record)
    assert record_problem(key, f"v=DKIM1; h=sha1:sha256; p={p}") is None
    # Some tools publish the bare RSAPublicKey; verifiers take it, and so does the check.
    private = serialization.load_pem_private_key(key.private_key, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    pkcs1 = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert public_key_matches(key, f"p={base64.b64encode(pkcs1).decode()}")


def test_load_key_reads_the_algorithm_from_the_key() -> None:
    pkcs1 = serialization.load_pem_private_key(rsa_pem(), password=None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    key = load_key(domain="Example.COM.", selector="s1", pem=pkcs1)
    assert (key.domain, key.algorithm) == ("example.com", "rsa-sha256")
    assert load_key(domain="example.com", selector="e", pem=ed25519_pem()).algorithm == (
        "ed25519-sha256"
    )
    assert b"PRIVATE" not in repr(key).encode()  # no secret in a log line


def _certificate() -> bytes:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_load_key_says_why_a_key_cannot_sign() -> None:
    encrypted = serialization.load_pem_private_key(rsa_pem(), password=None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    damaged = rsa_pem().replace(b"A", b"B", 40)
    cases = {
        b"garbage": "not a PEM private key",
        damaged: "not a PEM private key that can be read",
        _certificate(): "a certificate, not a private key",
        RSA_512: "a 512-bit RSA key: DKIM needs 1024 bits or more",
        encrypted: "an encrypted private key",
        ec_pem: "an EC key: DKIM signs with RSA or Ed25519 keys only",
    }
    for pem, why in cases.items():
        with pytest.raises(DkimError, match=re.escape(why)) as raised:
            load_key(domain="example.com", selector="s1", pem=pem)
        assert "s1._domainkey.example.com: " in str(raised.value)
        assert isinstance(raised.value, PixelpostError)


# Canonicalisation, held to dkimpy's


def dkimpy_body_hash(body: bytes) -> bytes:
    return hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


_LINE = st.text(alphabet=st.sampled_from("ab \t.=-"), max_size=12).map(str.encode)


@given(
    lines=st.lists(st.tuples(_LINE, st.sampled_from([b"\r\n", b"\n"])), max_size=12),
    unended=st.booleans(),
    chunk=st.integers(min_value=1, max_value=9),
)
def test_body_canonicalisation_matches_dkimpy(
    lines: list[tuple[bytes, bytes]], unended: bool, chunk: int
) -> None:
    body = b"".join(line + end for line, end in lines)
    if unended and lines:
        body = body.removesuffix(lines[-1][1])
    # dkimpy is given the body as sent: every line end CRLF, the last one too.
    assert relaxed_body_hash(body, chunk_size=chunk) == dkimpy_body_hash(wire(body))
    assert relaxed_body_hash(b"xx" + body, 2, chunk_size=chunk) == relaxed_body_hash(body)


def test_body_canonicalisation_edges() -> None:
    empty = hashlib.sha256(b"").digest()
    assert relaxed_body_hash(b"") == empty
    assert relaxed_body_hash(b"\r\n\r\n \t \r\n") == empty
    assert relaxed_body_hash(b"a  \t b \t\r\n\r\n\r\n") == hashlib.sha256(b"a b\r\n").digest()
    # A last line without its line end, blanks and all, ends as the SMTP client sends it.
    assert relaxed_body_hash(b"a\r\nb \t") == hashlib.sha256(b"a\r\nb\r\n").digest()
    assert relaxed_body_hash(b"a\rb\nc") == hashlib.sha256(b"a\r\nb\r\nc\r\n").digest()


def test_a_large_body_is_hashed_across_chunks_as_dkimpy_hashes_it() -> None:
    line = b"All work and no play  makes Jack a dull boy, \t the newsletter says.  \r\n"
    body = line * (3 * BODY_CHUNK // len(line)) + b"\r\n" * 5
    assert relaxed_body_hash(body) == dkimpy_body_hash(body)
    # A chunk cut falls inside a run of empty lines that a later line makes count.
    body = b"x\r\n" + b"\r\n" * BODY_CHUNK + b"y\r\n"
    assert relaxed_body_hash(body) == dkimpy_body_hash(body)


@given(
    name=st.sampled_from(["Subject", "X-Tag", "to", "MIME-Version"]),
    parts=st.lists(
        st.text(alphabet=st.sampled_from("ab:; \t"), max_size=8).map(str.encode), max_size=4
    ),
    fold=st.sampled_from([b"\r\n ", b"\r\n\t", b"\r\n \t "]),
)
def test_header_canonicalisation_matches_dkimpy(
    name: str, parts: list[bytes], fold: bytes
) -> None:
    value = fold.join(parts)
    raw = name.encode() + b":" + value + b"\r\n"
    [(cname, cvalue)] = Relaxed.canonicalize_headers([(name.encode(), value + b"\r\n")])
    assert relaxed_header(raw) == cname + b":" + cvalue


# Properties and real messages


_FIELD_NAMES = st.sampled_from(
    ["To", "Cc", "Subject", "Date", "Message-ID", "X-Mailer", "Received", "Content-Type", "cc"]
)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@settings(deadline=None)
@given(
    fields=st.lists(st.tuples(_FIELD_NAMES, _VALUE, st.booleans()), max_size=8),
    body=st.lists(_LINE, max_size=10),
    trailing=st.integers(min_value=0, max_value=3),
    sender_at=st.integers(min_value=0, max_value=8),
)
def test_any_message_signed_verifies(
    fields: list[tuple[str, str, bool]], body: list[bytes], trailing: int, sender_at: int
) -> None:
    lines = [
        f"{name}: {value[:10]}\r\n {value[10:]}" if folded else f"{name}: {value}"
        for name, value, folded in fields
    ]
    lines.insert(min(sender_at, len(lines)), "From: Someone <someone@mail.example.com>")
    message = "\r\n".join(lines).encode() + b"\r\n\r\n" + b"\r\n".join(body) + b"\r\n" * trailing
    ed, rsa = ed_key(), rsa_key()
    signed = dual_signer().sign(message, now=NOW)
    # As sent: a last line without its CRLF gets one, and loses its trailing blanks as
    # OpenDKIM drops them too; dkimpy alone would keep one blank there.
    assert verified(wire(signed), ed, rsa) == [True, True]
    if message.endswith(b"\r\n"):
        assert verified(signed, ed, rsa) == [True, True]


_OBSOLETE_NAME = re.compile(rb"^[!-9;-~]+[ \t]+:", re.MULTILINE)


def corpus_messages(corpus: Path | None) -> list[Path]:
    paths = sorted((FIXTURES / "mime").glob("*.eml"))
    if corpus is not None:
        paths += sorted((corpus / "mime").glob("*.eml"))
    return paths


def test_every_fixture_and_corpus_message_signs_and_verifies(corpus_or_none: Path | None) -> None:
    """Real and malformed messages, LF or CRLF, some signed already: each, sent, verifies
    with both of pixelpost's signatures, and fails once a body byte changes. A message
    without a From address gets one on top, so that it is signed too."""
    paths = corpus_messages(corpus_or_none)
    assert paths
    messages = {}
    for path in paths:
        message = path.read_bytes()
        if from_domain(message) is None:
            message = b"From: sender@corpus.example\r\n" + message
        messages[path.name] = message
    domains = {from_domain(message) or "" for message in messages.values()}
    keys = [
        load_key(domain=domain, selector=selector, pem=pem)
        for domain in domains
        for selector, pem in (("e1", ed25519_pem()), ("s1", rsa_pem()))
    ]
    signer = Signer(keys)
    failures: list[str] = []
    obsolete: list[str] = []
    for name, message in messages.items():
        signed = wire(signer.sign(message, now=NOW))
        if _OBSOLETE_NAME.search(message[: parse_header_section(message).body_offset]):
            # dkimpy cannot read a field name followed by blanks (RFC 5322 4.5.3's
            # obsolete syntax) at all; the signature is made, no verifier here can judge it.
            obsolete.append(name)
            continue
        if verified(signed, *keys)[:2] != [True, True]:  # ours, above any it came with
            failures.append(name)
            continue
        body = parse_header_section(signed).body_offset
        at = next(
            (
                i
                for i in range(len(signed) - 1, body - 1, -1)
                if signed[i] < 0x80 and chr(signed[i]).isalnum()
            ),
            -1,
        )
        if at >= 0:
            changed = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :]
            if any(verified(changed, *keys)[:2]):
                failures.append(f"{name} (altered, still verifies)")
    assert not failures
    assert len(obsolete) <= len(paths) // 10, obsolete  # the corpus has one such message
