"""The issue's acceptance, as a new user follows the README: keys made with
`pixelpost dkim keygen`, the records it prints published in a DNS server on loopback
(dnsmasq), `pixelpost dkim check` finding them, and a tracked newsletter sent through
`pixelpost serve` to a Postfix whose OpenDKIM milter verifies it: `dkim=pass` for the
RSA and the Ed25519 signature in the Authentication-Results it adds."""

from __future__ import annotations

import email
import email.policy
import os
import re
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from pixelpost.core.dkim import dkim_signatures
from tests.dns import local_dns
from tests.e2e.conftest import BIN, Running, start
from tests.net import free_port
from tests.opendkim import opendkim_milter
from tests.postfix import throwaway_postfix
from tests.sink import ThreadedSink
from tests.tools import need

DOMAIN = "example.com"


def keygen(tmp_path: Path, selector: str, kind: str) -> tuple[str, str]:
    """`pixelpost dkim keygen`; the record it says to publish, (name, joined value)."""
    printed = subprocess.run(
        [
            str(BIN / "pixelpost"),
            "dkim",
            "keygen",
            "--domain",
            DOMAIN,
            "--selector",
            selector,
            "--type",
            kind,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = re.search(rf"^({selector}\._domainkey\.{DOMAIN})\. IN TXT (.+)$", printed, re.M)
    assert line is not None, printed
    return line[1], "".join(re.findall(r'"([^"]*)"', line[2]))


def newsletter() -> bytes:
    message = EmailMessage()
    message["From"] = f"News <news@{DOMAIN}>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Spring sale"
    message["X-Config-Set"] = "marketing"
    message.set_content("Our spring sale: https://shop.example.com/sale")
    message.add_alternative(
        '<html><body><p>Our <a href="https://shop.example.com/sale">spring sale</a>.</p>'
        "</body></html>",
        subtype="html",
    )
    return message.as_bytes(policy=email.policy.SMTP)


def test_a_tracked_newsletter_passes_opendkim_behind_postfix(
    tmp_path: Path, postfix_dir: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    need("postfix")
    need("opendkim")
    need("dnsmasq")
    if os.geteuid() != 0:
        pytest.fail("a throwaway Postfix needs root (its daemons drop privileges)")
    records = dict([keygen(tmp_path, "s1", "rsa"), keygen(tmp_path, "s2", "ed25519")])
    assert (tmp_path / f"{DOMAIN}.s1.pem").stat().st_mode & 0o777 == 0o600
    postfix_port = free_port()
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        f"""
[relay]
listen = "127.0.0.1:0"
hostname = "relay.test"
[upstream]
url = "smtp://127.0.0.1:{postfix_port}"
[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example.org"
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[signing]
key_file = "{tmp_path / "signing.key"}"
[config_sets.marketing]
unsubscribe = true
[dkim.domains."{DOMAIN}"]
selector = "s1"
key = "{DOMAIN}.s1.pem"
ed25519_selector = "s2"
ed25519_key = "{DOMAIN}.s2.pem"
"""
    )

    with local_dns(records) as nameserver:
        where = f"{nameserver.host}:{nameserver.port}"
        command = ["dkim", "check", "-c", str(config), "--domain", DOMAIN, "--nameserver", where]
        check = subprocess.run(
            [str(BIN / "pixelpost"), *command],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count("matches") == 2, check.stdout
        with (
            opendkim_milter(nameserver, tmp_path / "opendkim") as milter,
            throwaway_postfix(postfix_dir, postfix_port, sink.port, milter.postfix_settings()),
        ):
            running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
            processes.append(running)
            with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
                client.sendmail(f"news@{DOMAIN}", ["reader@example.org"], newsletter())
            sink.handler.wait_for(1, timeout=20)
            running.stop()

    [arrival] = sink.handler.arrivals
    parsed = email.message_from_bytes(arrival.content, policy=email.policy.default)
    html = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    assert "https://t.example.org/c/" in html.get_content()  # type: ignore[attr-defined]
    [results] = [" ".join(v.split()) for v in parsed.get_all("Authentication-Results", [])]
    assert results.startswith("verifier.test;"), results
    verdicts = re.findall(r"dkim=(\w+)(?: \([^)]*\))?[^;]*?header\.a=([\w-]+)", results)
    assert sorted(verdicts) == [("pass", "ed25519-sha256"), ("pass", "rsa-sha256")], results
    # The one-click unsubscribe fields are added before signing, and both signatures
    # cover them (a verifier that passes them passes them as pixelpost wrote them).
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://t.example.org/u/" in parsed["List-Unsubscribe"]
    for signature in dkim_signatures(arrival.content):
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signature.headers)
