"""Issue 6's acceptance: swaks with --tls --auth against `pixelpost serve` configured
from config.example.toml plus a certificate; the user is the events' caller identity."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import smtplib
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import trustme

from pixelpost.config import BUILTIN_DEFAULTS
from pixelpost.core.passwords import hash_password
from tests.e2e.conftest import BIN, Running, delivered, start, until
from tests.net import free_port
from tests.tools import need_swaks_with_tls

ROOT = Path(__file__).resolve().parents[2]


def example_with_tls_and_a_user(tmp_path: Path, password: str) -> Path:
    """config.example.toml with its commented [relay.tls] and [[relay.users]] blocks
    turned on, and free ports."""
    issued = trustme.CA().issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    text = (ROOT / "config.example.toml").read_text()
    replacements = [
        ('# [[relay.users]]\n# name = "app"', '[[relay.users]]\nname = "app"'),
        ("# password_hash = ", "password_hash = "),
        ('# from_domains = ["example.com"]', 'from_domains = ["example.com"]'),
        ("# [relay.tls]\n# cert = ", "[relay.tls]\ncert = "),
        ("# key = ", "key = "),
        ('listen = "127.0.0.1:2525"', 'listen = "127.0.0.1:0"'),
        ('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'),
    ]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    text = re.sub(r'password_hash = "[^"]*"', f'password_hash = "{hash_password(password)}"', text)
    text = text.replace('"/etc/pixelpost/tls.crt"', f'"{tmp_path / "relay.crt"}"')
    text = text.replace('"/etc/pixelpost/tls.key"', f'"{tmp_path / "relay.key"}"')
    path = tmp_path / "pixelpost.toml"
    path.write_text(text)
    return path


def test_swaks_over_starttls_with_auth(tmp_path: Path, processes: list[Running]) -> None:
    swaks_path = need_swaks_with_tls()
    config = example_with_tls_and_a_user(tmp_path, "s3cret")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)

    server = ["--server", f"127.0.0.1:{running.smtp_port}", "--tls"]

    def swaks(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                swaks_path,
                *server,
                "--to",
                "someone@example.org",
                "--header",
                "X-Config-Set: default",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    wrong = swaks("--auth", "PLAIN", "--auth-user", "app", "--auth-password", "wrong")
    assert wrong.returncode != 0
    assert "535" in wrong.stdout
    login = ["--auth", "PLAIN", "--auth-user", "app", "--auth-password", "s3cret"]
    sent = swaks(*login, "--from", "news@example.com")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "=== TLS started" in sent.stdout

    [message] = delivered(tmp_path / "var" / "outbox")
    assert b"Subject: test" in message.read_bytes()
    events = tmp_path / "var" / "events.jsonl"
    until(
        lambda: events.exists() and len(events.read_text().splitlines()) >= 2,
        "the Send and Delivery events",
    )
    lines = events.read_text().splitlines()
    kinds = {json.loads(line)["eventType"]: json.loads(line) for line in lines}
    assert kinds["Send"]["mail"]["tags"]["ses:caller-identity"] == ["app"]
    assert running.stop() == 0


def test_sighup_loads_a_renewed_certificate_without_dropping_connections(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = example_with_tls_and_a_user(tmp_path, "s3cret")
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test reads the certificate, it does not trust it

    def certificate(client: smtplib.SMTP) -> bytes:
        client.ehlo()
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None
        return der

    kept = smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10)
    before = certificate(kept)
    renewed = trustme.CA().issue_cert("127.0.0.1")
    renewed.cert_chain_pems[0].write_to_path(str(tmp_path / "relay.crt"))
    renewed.private_key_pem.write_to_path(str(tmp_path / "relay.key"))
    running.process.send_signal(signal.SIGHUP)

    def served() -> bytes:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as fresh:
            return certificate(fresh)

    until(lambda: served() != before, "the renewed certificate served", within=10)
    assert "loaded again" in running.stderr
    kept.login("app", "s3cret")  # the connection opened before the reload still works
    kept.sendmail("news@example.com", ["someone@example.org"], b"Subject: kept\r\n\r\nhi\r\n")
    kept.quit()
    delivered(tmp_path / "var" / "outbox")
    assert running.stop() == 0


def readme_swaks() -> list[str]:
    """The README's swaks command, as its words."""
    text = (ROOT / "README.md").read_text()
    [block] = [
        b
        for b in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        if b.startswith("swaks --server 127.0.0.1:2525")
    ]
    return shlex.split(block.replace("\\\n", " "))


def test_the_readme_swaks_example_is_tracked_and_a_late_browser_click_reads_as_a_person(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        BUILTIN_DEFAULTS
        + f"""
[relay]
listen = "127.0.0.1:0"

[tracker]
listen = "127.0.0.1:{free_port()}"

[classify]
click_after_delivery = "{WINDOW:.0f}s"
"""
    )
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    words = readme_swaks()
    assert words[:3] == ["swaks", "--server", "127.0.0.1:2525"]
    words[:3] = [need_swaks_with_tls(), "--server", f"127.0.0.1:{running.smtp_port}"]

    sent = subprocess.run(words, capture_output=True, text=True, timeout=60, check=False)

    assert sent.returncode == 0, sent.stdout
    [copy] = delivered(tmp_path / "var" / "outbox")
    html = copy.read_text()
    [link] = re.findall(r'href="([^"]+)"', html)
    assert link.startswith(f"{running.http_url}/c/")
    assert re.search(rf'<img [^>]*src="{re.escape(running.http_url)}/o/[^"]+"', html)

    events = tmp_path / "var" / "events.jsonl"

    def click(user_agent: str) -> dict[str, object]:
        request = urllib.request.Request(link, headers={"User-Agent": user_agent})
        opener = urllib.request.build_opener(NoRedirect)
        with contextlib.suppress(urllib.error.HTTPError):
            opener.open(request, timeout=10)
        return wait_for_click(events, user_agent)

    # The relay records the delivery just after the copy lands; the rule needs it.
    until(lambda: "Delivery" in event_types(events), "the Delivery event")
    at_once = click(BROWSER)
    assert (at_once["bot"], at_once["botReason"]) == (True, "click_after_delivery")
    curl_like = click("curl/8.5.0")
    assert (curl_like["bot"], curl_like["botReason"]) == (True, "automated_client")
    # The window is the behaviour under test, in a process whose clock no test can move:
    # wait out what is left of it (the first clicks need it long on a loaded machine).
    time.sleep(max(0.0, delivered_at(events) + WINDOW + 0.2 - time.time()))
    later = click(BROWSER + " later")
    assert later["bot"] is False
    assert running.stop() == 0


WINDOW = 5.0
"""classify.click_after_delivery in the README example's test: short, yet long enough
for its first clicks to land within it."""
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def delivered_at(events: Path) -> float:
    """When the first Delivery event in `events` says its copy was delivered."""
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["eventType"] == "Delivery":
            return datetime.fromisoformat(event["delivery"]["timestamp"]).timestamp()
    raise AssertionError(f"no Delivery event in {events}")


def event_types(events: Path) -> list[str]:
    lines = events.read_text().splitlines() if events.exists() else []
    return [json.loads(line)["eventType"] for line in lines]


def wait_for_click(events: Path, user_agent: str) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in events.read_text().splitlines() if events.exists() else []:
            event = json.loads(line)
            if event["eventType"] == "Click" and event["click"]["userAgent"] == user_agent:
                return event["click"]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no Click by {user_agent!r} in {events}")
