"""DKIM through the relay: each copy signed last, after its tracking, verified by dkimpy
asking a real DNS server on loopback (dnsmasq) for the keys; and what becomes of a
message that arrives signed already. Real relays, a real aiosmtpd upstream."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import aiosmtplib
import dkim
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pixelpost.app.cli import main
from pixelpost.config import Config, parse_config_text
from pixelpost.core.dkim import DkimKey, dkim_signatures, load_key, txt_record
from pixelpost.store import SQLiteStore
from tests.conftest import RelayStarter, config_text, events_of, until
from tests.dns import Nameserver, local_dns, txt_lookup
from tests.integration.test_front_door import PASSWORD, smtps, tls_lines
from tests.integration.test_tracking_relay import newsletter
from tests.integration.test_tracking_relay import send as send_tracked
from tests.sink import SinkHandler
from tests.tools import need
from tests.unit.test_dkim import RSA_512

DOMAIN = "example.com"


def rsa_pem(bits: int = 2048) -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Keys:
    """pixelpost's two keys (s1 rsa, s2 ed25519) and a mailer's own (old), in files and
    published."""

    def __init__(self, folder: Path) -> None:
        self.rsa_file, self.ed25519_file = folder / "s1.pem", folder / "s2.pem"
        self.rsa_file.write_bytes(rsa_pem())
        self.ed25519_file.write_bytes(ed25519_pem())
        self.old_pem = rsa_pem()
        self.rsa = load_key(domain=DOMAIN, selector="s1", pem=self.rsa_file.read_bytes())
        self.ed25519 = load_key(domain=DOMAIN, selector="s2", pem=self.ed25519_file.read_bytes())
        self.old = load_key(domain=DOMAIN, selector="old", pem=self.old_pem)

    def records(self) -> dict[str, str]:
        keys: list[DkimKey] = [self.rsa, self.ed25519, self.old]
        return {f"{k.selector}._domainkey.{DOMAIN}": txt_record(k) for k in keys}

    def config_lines(self) -> str:
        return (
            f'[dkim.domains."{DOMAIN}"]\nselector = "s1"\nkey = "{self.rsa_file}"\n'
            f'ed25519_selector = "s2"\ned25519_key = "{self.ed25519_file}"\n'
        )


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def dns(keys: Keys) -> Iterator[Nameserver]:
    need("dnsmasq")
    with local_dns(keys.records()) as nameserver:
        yield nameserver


def dkim_config(port: int, tmp_path: Path, keys: Keys | None, dkim_table: str = "") -> Config:
    text = config_text(f"smtp://127.0.0.1:{port}", tmp_path)
    text += f"\n[dkim]\n{dkim_table}\n" + (keys.config_lines() if keys else "")
    return parse_config_text(text, environ={})


def verdicts(message: bytes, nameserver: Nameserver) -> dict[str, bool]:
    """Each DKIM signature of `message`, by selector: whether it verifies."""
    verifier = dkim.DKIM(message)
    found = {}
    for index, signature in enumerate(dkim_signatures(message)):
        try:
            found[signature.selector] = verifier.verify(idx=index, dnsfunc=txt_lookup(nameserver))
        except dkim.ValidationError:  # a body hash that does not match, said so
            found[signature.selector] = False
    return found


def presigned(keys: Keys, *, config_set: str) -> bytes:
    """The newsletter as a mailer that signs its own mail (selector old) sends it."""
    message = newsletter(config_set=config_set)
    signature = dkim.sign(
        message,
        b"old",
        DOMAIN.encode(),
        keys.old_pem,
        include_headers=[b"from", b"to", b"subject"],
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return signature + message


def tracked(copy: bytes) -> bool:
    """Whether the copy's HTML carries the pixel."""
    parsed = message_from_bytes(copy, policy=policy.default)
    html = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    return "https://t.example/o/" in html.get_content()  # type: ignore[attr-defined]


def one_byte_changed(message: bytes) -> bytes:
    at = message.rindex(b"Welcome")
    return message[:at] + b"w" + message[at + 1 :]


async def test_each_tracked_copy_is_signed_last_and_verifies_rsa_and_ed25519(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    handler, port = sink
    relay = await start_relay(dkim_config(port, tmp_path, keys))

    await send_tracked(
        relay.address.port,
        newsletter(config_set="marketing"),
        ["a@example.org", "b@example.org"],
    )

    await until(lambda: len(handler.arrivals) == 2, "both copies")
    for arrival in handler.arrivals:
        copy = arrival.content
        assert tracked(copy)
        assert copy.startswith(b"DKIM-Signature: ")  # the last thing added: on top
        signatures = dkim_signatures(copy)
        assert [(s.selector, s.algorithm) for s in signatures] == [
            ("s2", "ed25519-sha256"),
            ("s1", "rsa-sha256"),
        ]
        assert signatures[1].headers.count("from") == 2  # oversigned
        assert verdicts(copy, dns) == {"s2": True, "s1": True}
        assert verdicts(one_byte_changed(copy), dns) == {"s2": False, "s1": False}


async def test_the_unsubscribe_fields_are_signed_with_the_copy(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    handler, port = sink
    config = parse_config_text(
        config_text(f"smtp://127.0.0.1:{port}", tmp_path).replace(
            "[config_sets.marketing]\n", "[config_sets.marketing]\nunsubscribe = true\n"
        )
        + "\n[dkim]\n"
        + keys.config_lines(),
        environ={},
    )
    relay = await start_relay(config)

    await send_tracked(relay.address.port, newsletter(config_set="marketing"), ["a@example.org"])

    await until(lambda: handler.arrivals, "the copy")
    copy = handler.arrivals[0].content
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in copy
    for signature in dkim_signatures(copy):
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signature.headers)
    assert verdicts(copy, dns) == {"s2": True, "s1": True}
    # A field changed on the way (a list server rewriting it) fails both.
    altered = copy.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=One-click")
    assert verdicts(altered, dns) == {"s2": False, "s1": False}


async def test_a_signed_message_is_signed_again_when_pixelpost_has_the_key(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    """ "resign", the default with a key: the mailer's signature, which the rewrite would
    break, is gone, and pixelpost's pass."""
    handler, port = sink
    relay = await start_relay(dkim_config(port, tmp_path, keys))
    message = presigned(keys, config_set="marketing")
    assert verdicts(message, dns) == {"old": True}

    await send_tracked(relay.address.port, message, ["a@example.org"])

    await until(lambda: handler.arrivals, "the copy")
    copy = handler.arrivals[0].content
    assert tracked(copy)
    assert verdicts(copy, dns) == {"s2": True, "s1": True}
    assert b"s=old" not in copy


async def test_skip_tracking_sends_a_signed_message_untouched_and_says_why(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    handler, port = sink
    config = dkim_config(port, tmp_path, keys, 'signed_input = "skip-tracking"')
    relay = await start_relay(config)
    message = presigned(keys, config_set="marketing")

    await send_tracked(relay.address.port, message, ["a@example.org", "b@example.org"])

    events = await events_of(store, rendering_failure=1, delivery=1)
    await until(lambda: handler.arrivals, "the copy")
    [arrival] = handler.arrivals  # untracked: one copy for both
    copy = arrival.content
    assert not tracked(copy)
    body = message[message.index(b"\r\n\r\n") :]
    assert copy.endswith(body)  # the body as it came
    assert verdicts(copy, dns) == {"s2": True, "s1": True, "old": True}
    [failure] = [detail for kind, _, detail in events if kind == "rendering_failure"]
    assert "DKIM-signed by example.com" in failure["errorMessage"]
    assert "skip-tracking" in failure["errorMessage"]


async def test_without_a_key_a_signed_message_is_not_tracked_and_keeps_its_signature(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    handler, port = sink
    relay = await start_relay(dkim_config(port, tmp_path, None))
    message = presigned(keys, config_set="marketing")

    await send_tracked(relay.address.port, message, ["a@example.org"])

    await events_of(store, rendering_failure=1, delivery=1)
    copy = handler.arrivals[0].content
    assert not tracked(copy)
    assert verdicts(copy, dns) == {"old": True}


async def test_track_breaks_the_signature_knowingly_and_an_untracked_one_keeps_it(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    handler, port = sink
    relay = await start_relay(dkim_config(port, tmp_path, None, 'signed_input = "track"'))

    await send_tracked(relay.address.port, presigned(keys, config_set="marketing"), ["a@x.org"])
    await send_tracked(relay.address.port, presigned(keys, config_set="untracked"), ["b@x.org"])

    await until(lambda: len(handler.arrivals) == 2, "both copies")
    by_recipient = {a.rcpt_tos[0]: a.content for a in handler.arrivals}
    assert tracked(by_recipient["a@x.org"])
    assert verdicts(by_recipient["a@x.org"], dns) == {"old": False}
    assert verdicts(by_recipient["b@x.org"], dns) == {"old": True}


def test_check_config_names_a_missing_key_and_a_short_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.pem"
    short.write_bytes(RSA_512)
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        config_text("maildir:./outbox", tmp_path)
        + f'\n[dkim.domains."{DOMAIN}"]\nselector = "s1"\nkey = "{short}"\n'
        + f'ed25519_selector = "s2"\ned25519_key = "{tmp_path / "missing.pem"}"\n'
    )

    assert main(["check-config", "-c", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f'dkim.domains."{DOMAIN}".key: ')
    assert "512" in lines[0]
    assert lines[1].startswith(f'dkim.domains."{DOMAIN}".ed25519_key: cannot read the key file')


def test_dkim_check_names_a_domain_that_has_no_key(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pixelpost.toml"
    path.write_text(config_text("maildir:./outbox", tmp_path) + "\n" + keys.config_lines())

    assert main(["dkim", "check", "-c", str(path), "--domain", "example.net"]) == 1

    assert capsys.readouterr().err.strip() == (
        "pixelpost: --domain 'example.net' has no [dkim.domains] entry (configured: example.com)"
    )


async def test_a_user_held_to_its_domains_gets_no_signature_for_another_domain(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    ca: trustme.CA,
) -> None:
    """User "app" may send as example.org only: a From in example.com, which pixelpost
    signs for, is refused, or its copies would carry example.com's signature; user
    "any" may send it."""
    handler, port = sink
    relay_lines = tls_lines(ca, tmp_path).replace(
        'from_domains = ["example.com"]', 'from_domains = ["example.org"]'
    )
    text = config_text(f"smtp://127.0.0.1:{port}", tmp_path, relay=relay_lines)
    relay = await start_relay(parse_config_text(text + "\n" + keys.config_lines(), environ={}))
    message = newsletter(config_set="marketing")  # From: news@example.com

    async with smtps(relay, ca) as client:
        await client.login("app", PASSWORD)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("news@example.org", ["a@example.org"], message)
    assert refused.value.code == 553
    assert "From address in example.com not allowed for user app" in refused.value.message

    async with smtps(relay, ca) as client:
        await client.login("any", PASSWORD)
        await client.sendmail("news@example.com", ["b@example.org"], message)
    await until(lambda: handler.arrivals, "the copy")
    assert [a.rcpt_tos for a in handler.arrivals] == [["b@example.org"]]


async def test_a_signature_over_a_control_header_holds_when_the_message_goes_untouched(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    """OpenDKIM in front signs every field, X-Config-Set among them: a message sent
    untouched keeps it, so that the signature still verifies."""
    handler, port = sink
    relay = await start_relay(dkim_config(port, tmp_path, None))
    message = newsletter(config_set="marketing")
    signature = dkim.sign(
        message,
        b"old",
        DOMAIN.encode(),
        keys.old_pem,
        include_headers=[b"from", b"subject", b"x-config-set"],
        canonicalize=(b"relaxed", b"relaxed"),
    )

    await send_tracked(relay.address.port, signature + message, ["a@example.org"])

    await events_of(store, rendering_failure=1, delivery=1)
    copy = handler.arrivals[0].content
    assert not tracked(copy)
    assert b"X-Config-Set: marketing" in copy
    assert verdicts(copy, dns) == {"old": True}


async def test_resign_without_a_key_for_the_from_domain_leaves_the_message_untouched(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    dns: Nameserver,
) -> None:
    """Keys for example.net only, "resign" configured: a message From example.com
    signed by its mailer would lose its signature and get none; it goes untouched."""
    handler, port = sink
    other = tmp_path / "other.pem"
    other.write_bytes(rsa_pem())
    table = (
        f'signed_input = "resign"\n[dkim.domains."example.net"]\nselector = "s1"\n'
        f'key = "{other}"\n'
    )
    relay = await start_relay(dkim_config(port, tmp_path, None, table))

    await send_tracked(relay.address.port, presigned(keys, config_set="marketing"), ["a@x.org"])

    events = await events_of(store, rendering_failure=1, delivery=1)
    copy = handler.arrivals[0].content
    assert not tracked(copy)
    assert verdicts(copy, dns) == {"old": True}
    [failure] = [detail for kind, _, detail in events if kind == "rendering_failure"]
    assert "no DKIM key for its From domain" in failure["errorMessage"]


async def test_a_user_held_to_a_subdomain_may_send_from_it_under_the_parents_key(
    sink: tuple[SinkHandler, int],
    start_relay: RelayStarter,
    tmp_path: Path,
    store: SQLiteStore,
    keys: Keys,
    ca: trustme.CA,
    dns: Nameserver,
) -> None:
    """from_domains names the From domain the user may use, as at MAIL FROM: the key
    that signs it may be its parent's."""
    handler, port = sink
    relay_lines = tls_lines(ca, tmp_path).replace(
        'from_domains = ["example.com"]', 'from_domains = ["news.example.com"]'
    )
    text = config_text(f"smtp://127.0.0.1:{port}", tmp_path, relay=relay_lines)
    relay = await start_relay(parse_config_text(text + "\n" + keys.config_lines(), environ={}))
    message = newsletter(config_set="marketing").replace(
        b"news@example.com", b"news@news.example.com", 1
    )

    async with smtps(relay, ca) as client:
        await client.login("app", PASSWORD)
        await client.sendmail("news@news.example.com", ["a@example.org"], message)

    await until(lambda: handler.arrivals, "the copy")
    assert verdicts(handler.arrivals[0].content, dns) == {"s2": True, "s1": True}
