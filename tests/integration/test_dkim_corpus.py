"""Every template and real message, tracked as the relay tracks it, then signed: each
copy verifies `pass` with both signatures (rsa-sha256 and ed25519-sha256), its keys
looked up by dkimpy in a real DNS server on loopback (dnsmasq), and `fail` once one
byte of its body has changed. The project's fixtures always; the shared corpus too when
it is there (required in CI)."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim

from pixelpost.config import ConfigSet
from pixelpost.core.dkim import DkimKey, Signer, from_domain, load_key, txt_record
from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import TokenCodec
from relay.outbound.spoolfile import Copy, Envelope, Tracking
from relay.tracking import Signing, decide, render_copy
from tests.conftest import FIXTURES
from tests.dns import Nameserver, local_dns, txt_lookup
from tests.tools import need
from tests.unit.test_dkim import ed25519_pem, rsa_pem, wire

TRACKED = ConfigSet(name="marketing")
OBSOLETE_NAME = re.compile(rb"^[!-9;-~]+[ \t]+:", re.MULTILINE)
CODEC = TokenCodec([b"k" * 32])


def template_message(html: str) -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@templates.example>"
    message["To"] = "reader@example.org"
    message["Subject"] = "A template"
    message.set_content("The text part.")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message.as_bytes(policy=policy.SMTP)


def messages(corpus: Path | None) -> dict[str, bytes]:
    """Each template as a newsletter, and each MIME message as it is (a From on top of one
    that has none, so that it is signed)."""
    folders = [FIXTURES] + ([corpus] if corpus is not None else [])
    found: dict[str, bytes] = {}
    for folder in folders:
        for path in sorted((folder / "html").glob("*.html")):
            found[path.name] = template_message(path.read_text("utf-8", "replace"))
        for path in sorted((folder / "mime").glob("*.eml")):
            content = path.read_bytes()
            if from_domain(content) is None:
                content = b"From: sender@corpus.example\r\n" + content
            found[path.name] = content
    return found


def tracked_copy(content: bytes, signer: Signer) -> tuple[bytes, bool]:
    """The copy the relay sends of `content` to one recipient, and whether it is tracked."""
    decision = decide(content, TRACKED, Signing(signer=signer))
    content = content if decision.content is None else decision.content
    copy = Copy(id=new_message_id(), recipients=("reader@example.org",))
    envelope = Envelope(
        id=copy.id,
        mail_from="news@example.com",
        copies=(copy,),
        received_at=0.0,
        expires_at=1.0,
        tracking=Tracking(base_url="https://t.example", open=True, click=True),
    )
    rendered = render_copy(envelope, content, copy, plan=decision.plan, codec=CODEC)
    # As it goes out: aiosmtplib makes every line end CRLF, and the last one too.
    return wire(signer.sign(rendered)), decision.plan is not None


def verified(message: bytes, nameserver: Nameserver) -> list[bool]:
    """The first two signatures (pixelpost's, on top of any the message came with)."""
    verifier = dkim.DKIM(message)
    results = []
    for index in range(2):
        try:
            results.append(verifier.verify(idx=index, dnsfunc=txt_lookup(nameserver)))
        except dkim.ValidationError:
            results.append(False)
    return results


def changed_body_byte(message: bytes) -> bytes:
    """`message` with its last letter or digit changed."""
    at = max(i for i in range(len(message)) if chr(message[i]).isalnum())
    return message[:at] + (b"x" if message[at : at + 1] != b"x" else b"y") + message[at + 1 :]


def test_every_tracked_copy_verifies_and_fails_once_changed(corpus_or_none: Path | None) -> None:
    need("dnsmasq")
    corpus = messages(corpus_or_none)
    domains = sorted({from_domain(content) or "" for content in corpus.values()})
    keys: list[DkimKey] = [
        load_key(domain=domain, selector=selector, pem=pem)
        for domain in domains
        for selector, pem in (("e1", ed25519_pem()), ("s1", rsa_pem()))
    ]
    signer = Signer(keys)
    records = {f"{k.selector}._domainkey.{k.domain}": txt_record(k) for k in keys}
    failures, unchanged_passes, unreadable, tracked = [], [], [], 0
    with local_dns(records) as nameserver:
        for name, content in corpus.items():
            copy, was_tracked = tracked_copy(content, signer)
            tracked += was_tracked
            try:
                if verified(copy, nameserver) != [True, True]:
                    failures.append(name)
                elif True in verified(changed_body_byte(copy), nameserver):
                    unchanged_passes.append(name)
            except dkim.MessageFormatError:
                unreadable.append(content)
    assert failures == []
    assert unchanged_passes == []
    # dkimpy reads no field name followed by blanks (RFC 5322's obsolete syntax, in the
    # corpus's malformed messages): such a copy is signed, and no verifier here judges it.
    assert all(OBSOLETE_NAME.search(content) for content in unreadable)
    assert tracked >= len(list((FIXTURES / "html").glob("*.html")))  # the templates at least
