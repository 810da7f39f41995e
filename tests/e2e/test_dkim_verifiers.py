"""The independent DKIM verifiers that the signing tests rely on, proven on their own:
keys made here, messages signed here by dkimpy (not by pixelpost), the keys published
in a dnsmasq on loopback; dkimpy verifying over the network, and Debian's OpenDKIM as a
milter in front of a throwaway Postfix, each passing a signed message and failing it
once one byte has changed."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.dns import Nameserver, local_dns, txt_lookup
from tests.net import free_port
from tests.opendkim import opendkim_milter
from tests.postfix import throwaway_postfix
from tests.sink import ThreadedSink
from tests.tools import need

DOMAIN = "example.com"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Key:
    algorithm: str
    selector: str
    private: bytes
    """In the form `dkim.sign` takes: PEM for RSA, the base64 raw seed for Ed25519."""
    record: str

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{DOMAIN}"


def rsa_key(selector: str) -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(
        algorithm="rsa-sha256",
        selector=selector,
        private=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        record=f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}",
    )


def ed25519_key(selector: str) -> Key:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return Key(
        algorithm="ed25519-sha256",
        selector=selector,
        private=base64.b64encode(seed),
        record=f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}",
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {key.algorithm: key for key in (rsa_key("rsa1"), ed25519_key("ed1"))}


@pytest.fixture
def nameserver(keys: dict[str, Key]) -> Iterator[Nameserver]:
    need("dnsmasq")
    with local_dns({key.name: key.record for key in keys.values()}) as found:
        yield found


def message(to: str) -> bytes:
    return (
        f"From: News <news@{DOMAIN}>\r\n"
        f"To: {to}\r\n"
        "Subject: Spring sale\r\n"
        "Date: Thu, 04 Dec 2025 10:00:00 +0000\r\n"
        f"Message-ID: <{to.replace('@', '.')}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello,\r\n"
        "\r\n"
        "everything is half price until Sunday.\r\n"
    ).encode()


def signed(key: Key, content: bytes) -> bytes:
    signature = dkim.sign(
        content,
        key.selector.encode(),
        DOMAIN.encode(),
        key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
        signature_algorithm=key.algorithm.encode(),
    )
    return bytes(signature) + content


def altered(content: bytes) -> bytes:
    """`content` with one byte of its body changed."""
    altered = content.replace(b"half price", b"half prise", 1)
    assert altered != content
    return altered


def test_a_long_record_is_served_as_strings_that_join_into_it(
    keys: dict[str, Key], nameserver: Nameserver
) -> None:
    key = keys["rsa-sha256"]
    assert len(key.record) > 255

    [answer] = nameserver.resolver().resolve(key.name, "TXT")

    assert [len(string) for string in answer.strings] == [255, len(key.record) - 255]
    assert b"".join(answer.strings) == key.record.encode()
    assert txt_lookup(nameserver)(f"{key.name}.".encode()) == key.record.encode()
    assert txt_lookup(nameserver)(f"nokey._domainkey.{DOMAIN}.".encode()) is None


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_dkimpy_looking_keys_up_in_the_local_dns_passes_and_fails(
    keys: dict[str, Key], nameserver: Nameserver, algorithm: str
) -> None:
    key = keys[algorithm]
    content = signed(key, message("ann@example.org"))
    assert f"a={algorithm};".encode() in content

    assert dkim.verify(content, dnsfunc=txt_lookup(nameserver))
    assert not dkim.verify(altered(content), dnsfunc=txt_lookup(nameserver))
    # The key comes from the DNS: signed by a key that is not published there, it fails.
    other = rsa_key(key.selector) if algorithm == "rsa-sha256" else ed25519_key(key.selector)
    assert not dkim.verify(
        signed(other, message("ann@example.org")), dnsfunc=txt_lookup(nameserver)
    )


def authentication_results(content: bytes) -> list[str]:
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    return [" ".join(value.split()) for value in parsed.get_all("Authentication-Results", [])]


def test_opendkim_in_front_of_postfix_passes_signed_copies_and_fails_altered_ones(
    keys: dict[str, Key],
    nameserver: Nameserver,
    tmp_path: Path,
    postfix_dir: Path,
    sink: ThreadedSink,
) -> None:
    need("postfix")
    need("opendkim")
    if os.geteuid() != 0:
        pytest.fail("a throwaway Postfix needs root (its daemons drop privileges)")
    sent = {
        "rsa@example.org": signed(keys["rsa-sha256"], message("rsa@example.org")),
        "ed@example.org": signed(keys["ed25519-sha256"], message("ed@example.org")),
        "unsigned@example.org": message("unsigned@example.org"),
    }
    sent["rsa-altered@example.org"] = altered(sent["rsa@example.org"])
    sent["ed-altered@example.org"] = altered(sent["ed@example.org"])

    with (
        opendkim_milter(nameserver, tmp_path / "opendkim") as milter,
        throwaway_postfix(
            postfix_dir, free_port(), sink.port, milter.postfix_settings()
        ) as postfix,
    ):
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
            for to, content in sent.items():
                client.sendmail(f"news@{DOMAIN}", [to], content)
        sink.handler.wait_for(len(sent), timeout=20)

    results = {
        arrival.rcpt_tos[0]: authentication_results(arrival.content)
        for arrival in sink.handler.arrivals
    }
    assert sorted(results) == sorted(sent)
    assert all(len(found) == 1 for found in results.values()), results
    assert all(found[0].startswith("verifier.test;") for found in results.values()), results
    [rsa_pass] = results["rsa@example.org"]
    assert "dkim=pass" in rsa_pass
    assert "2048-bit key" in rsa_pass
    assert f"header.d={DOMAIN} " in rsa_pass
    assert "header.a=rsa-sha256 header.s=rsa1 " in rsa_pass
    [ed_pass] = results["ed@example.org"]
    assert "dkim=pass" in ed_pass
    assert "header.a=ed25519-sha256 header.s=ed1 " in ed_pass
    for to in ("rsa-altered@example.org", "ed-altered@example.org"):
        [failed] = results[to]
        assert "dkim=fail" in failed
        assert "dkim=pass" not in failed
    assert "dkim=none" in results["unsigned@example.org"][0]
    # The body went through untouched, apart from the headers Postfix and OpenDKIM add.
    for arrival in sink.handler.arrivals:
        assert arrival.content.endswith(sent[arrival.rcpt_tos[0]].split(b"\r\n\r\n", 1)[1])
