"""docs/deploy.md followed on one machine: the guide's configuration on one PostgreSQL
schema with one signing key, two `pixelpost relay` behind HAProxy, two `pixelpost
tracker` behind nginx and a `pixelpost dispatch`, HAProxy and nginx on the guide's own
snippets (the hosts of its examples turned into this machine's ports). A message goes
in through each relay; a person opens and clicks each copy through nginx; the funnel,
the webhook and the dashboard say so. Then a relay and a tracker stop, and mail and
hits go to the others."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pixelpost.keys import generate_signing_key, generate_webhook_secret
from tests.e2e.conftest import BIN, Running, doc_block, start, until
from tests.net import free_port
from tests.postgres import RunDatabase
from tests.receiver import ThreadedReceiver
from tests.sink import ThreadedSink
from tests.tools import need

GUIDE = "docs/deploy.md"
TOKEN = "cluster-test-token-0123456789"
LINK = "https://shop.example.com/spring-sale"
CLIENT = "127.0.0.3"
"""The mailer's address: HAProxy's own is 127.0.0.1, and the relays must see this one."""
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
READERS = {"ann@example.org": "203.0.113.7", "bob@example.org": "198.51.100.23"}
"""Each recipient and the public address their browser reads mail from."""
CLICK_WINDOW = 1.0
"""classify.click_after_delivery here: a person's click comes later than this after
delivery (the guide keeps the default, 10 s, which this test does not wait out)."""


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with its one `old` replaced: the guide's examples are edited where the
    test expects them, or the test says what moved."""
    assert text.count(old) == 1, f"{GUIDE}: expected {old!r} once"
    return text.replace(old, new)


def guide_config(*, sink_port: int, nginx_port: int, webhook_port: int) -> str:
    """The guide's configuration, with its placeholder hosts made this machine's."""
    text = doc_block("toml", GUIDE)
    text = replace_once(text, '["10.0.1.0/24"]', '["127.0.0.0/8"]')
    text = replace_once(text, "smtp://mta.internal:25", f"smtp://127.0.0.1:{sink_port}")
    text = replace_once(text, "https://t.example.com", f"http://127.0.0.1:{nginx_port}")
    text = replace_once(text, '["10.0.2.10/32"]', '["127.0.0.1/32"]')
    text = replace_once(
        text, "https://app.example.com/email-events", f"http://127.0.0.1:{webhook_port}/events"
    )
    return text + f'\n[classify]\nclick_after_delivery = "{CLICK_WINDOW:.0f}s"\n'


def instance_config(shared: str, folder: Path) -> Path:
    """The configuration of one instance on this machine: its own listen addresses,
    spool and journal, as the guide says instances sharing a machine need (and so that
    nothing is written outside the test's folder)."""
    folder.mkdir()
    text = replace_once(shared, '"0.0.0.0:2525"', '"127.0.0.1:0"')
    text = replace_once(text, '"0.0.0.0:9102"', '"127.0.0.1:0"')
    text = replace_once(text, '"0.0.0.0:8080"', '"127.0.0.1:0"')
    text = replace_once(text, '"/var/lib/pixelpost/spool"', f'"{folder / "spool"}"')
    text = replace_once(text, '"/var/lib/pixelpost/hits"', f'"{folder / "hits"}"')
    path = folder / "pixelpost.toml"
    path.write_text(text)
    return path


def haproxy_config(relays: list[Running], port: int, folder: Path) -> str:
    """The guide's HAProxy snippet on this machine's ports, with a stats socket (not part
    of the guide) to read the health checks from, and checks every 200 ms."""
    site = replace_once(doc_block("haproxy", GUIDE), "bind :587", f"bind 127.0.0.1:{port}")
    for number, (relay, placeholder) in enumerate(
        zip(relays, ("10.0.1.11", "10.0.1.12"), strict=True), start=1
    ):
        http_port = urlsplit(relay.value("relay http")).port
        line = re.search(rf"\n\s*server relay{number} [^\n]*", site)
        assert line is not None, f"{GUIDE}: no `server relay{number}` line"
        mine = line[0].replace(f"{placeholder}:2525", f"127.0.0.1:{relay.smtp_port}")
        mine = mine.replace("port 9102", f"port {http_port}").replace("inter 5s", "inter 200ms")
        site = site.replace(line[0], mine)
    return f"global\n    stats socket {folder / 'haproxy.sock'} level admin\n\n{site}"


def nginx_config(trackers: list[Running], port: int, folder: Path) -> Path:
    """The guide's nginx snippet on this machine's ports, without TLS, in a complete
    nginx.conf whose files are all under `folder`."""
    site = doc_block("nginx", GUIDE)
    for tracker, placeholder in zip(trackers, ("10.0.2.11", "10.0.2.12"), strict=True):
        address = tracker.http_url.removeprefix("http://")
        assert site.count(f"{placeholder}:8080") == 2, "each tracker in both upstreams"
        site = site.replace(f"{placeholder}:8080", address)
    site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{port};")
    site = re.sub(r"\n\s*listen 443[^\n]*|\n\s*ssl_certificate[^\n]*", "", site)
    temp = folder / "nginx"
    temp.mkdir()
    path = folder / "nginx.conf"
    path.write_text(
        f"""
daemon off;
pid {temp / "nginx.pid"};
error_log {temp / "error.log"};
events {{}}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
{site}
}}
"""
    )
    return path


def listening(name: str, port: int, server: subprocess.Popen[bytes]) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        assert server.poll() is None, f"{name} exited {server.returncode}"
        return False
    return True


def haproxy_servers(socket_path: Path) -> dict[str, tuple[str, str]]:
    """Each relay's state and last health check, as HAProxy's stats say (`UP`, `L7OK`:
    /healthz answered 200); nothing while the stats socket is not there yet."""
    with socket.socket(socket.AF_UNIX) as stats:
        try:
            stats.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        stats.sendall(b"show stat\n")
        answer = b""
        while chunk := stats.recv(65536):
            answer += chunk
    header, *rows = answer.decode().splitlines()
    names = header.lstrip("# ").split(",")
    found = {}
    for row in rows:
        fields = dict(zip(names, row.split(","), strict=False))
        if fields.get("pxname") == "pixelpost_relays" and fields["svname"].startswith("relay"):
            found[fields["svname"]] = (fields["status"], fields["check_status"])
    return found


def newsletter(recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = recipient
    message["Subject"] = "Spring is here"
    message.set_content("See it in HTML.")
    message.add_alternative(
        f'<html><body><p>Spring is here.</p><a href="{LINK}">See the sale</a></body></html>',
        subtype="html",
    )
    return message


def tracked(content: bytes) -> tuple[str, str, str]:
    """The pixel, the tracked link and the unsubscribe URL of a delivered copy."""
    copy = message_from_bytes(content, policy=policy.default)
    html = copy.get_body(("html",))
    assert html is not None
    text = html.get_content()
    [pixel] = re.findall(r'src="([^"]+/o/[^"]+)"', text)
    [link] = re.findall(r'href="([^"]+/c/[^"]+)"', text)
    [unsubscribe] = re.findall(r"<(http[^>]+/u/[^>]+)>", str(copy["List-Unsubscribe"]))
    return pixel, link, unsubscribe


def get(
    url: str, headers: dict[str, str] | None = None, *, method: str = "GET", body: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed: the status, the headers and the body."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def accepted(relay: Running) -> list[str]:
    """The relay's log lines of the messages it accepted."""
    return [line for line in relay.stderr_lines if " from=<news@example.com> " in line]


def as_a_person(url: str, recipient: str) -> tuple[int, dict[str, str], bytes]:
    """A browser's request, through nginx, from the recipient's public address."""
    return get(url, {"User-Agent": CHROME, "X-Forwarded-For": READERS[recipient]})


def hits_answered(tracker: Running) -> tuple[float, float]:
    """The opens and the clicks that one tracker answered, from its own /metrics."""
    _, _, body = get(f"{tracker.http_url}/metrics")
    text = body.decode()

    def total(name: str) -> float:
        found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
        assert found is not None, f"no {name}_total on {tracker.http_url}/metrics"
        return float(found[1])

    return total("pixelpost_opens"), total("pixelpost_clicks")


def funnel(config: Path, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "pixelpost"), "stats", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    totals: dict[str, Any] = json.loads(result.stdout)["totals"]
    return totals


PEOPLE_ONLY = {
    "sent": 2,
    "delivered": 2,
    "opened": {"unique": 2, "human": 2, "machine": 0},
    "clicked": {"unique": 2, "human": 2, "bot": 0},
}


def people_only(totals: dict[str, Any]) -> dict[str, Any]:
    """The funnel's numbers that `PEOPLE_ONLY` names."""
    opened, clicked = totals["opened"], totals["clicked"]
    return {
        "sent": totals["sent"],
        "delivered": totals["delivered"],
        "opened": {
            "unique": opened["unique"],
            "human": opened["human"]["unique"],
            "machine": opened["machine"]["unique"],
        },
        "clicked": {
            "unique": clicked["unique"],
            "human": clicked["human"]["unique"],
            "bot": clicked["bot"]["unique"],
        },
    }


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    receiver = ThreadedReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def delivered(receiver: ThreadedReceiver) -> int:
    """The Delivery events the webhook got."""
    return sum(b'"eventType":"Delivery"' in r.body for r in list(receiver.receiver.requests))


def webhook_events(
    receiver: ThreadedReceiver, count: int, *dispatching: Running
) -> list[dict[str, Any]]:
    """The events the webhook got, once there are `count`; or what there is, and the log
    of the trackers whose dispatchers deliver them."""
    try:
        receiver.receiver.wait_for(count)
    except AssertionError as exc:
        got = [
            (event["eventType"], event["mail"]["destination"])
            for event in (json.loads(r.body) for r in receiver.receiver.requests)
        ]
        logs = "".join(tracker.stderr for tracker in dispatching)
        raise AssertionError(f"{exc}: {got}; the trackers' log:\n{logs}") from None
    return [json.loads(request.body) for request in receiver.receiver.requests]


def stop_all(running: list[Running]) -> list[int]:
    with ThreadPoolExecutor(len(running)) as pool:
        return list(pool.map(lambda process: process.stop(signal.SIGTERM), running))


def test_the_deployment_guide_on_one_machine(
    tmp_path: Path,
    postgresql: RunDatabase,
    sink: ThreadedSink,
    receiver: ThreadedReceiver,
    processes: list[Running],
) -> None:
    nginx, haproxy = need("nginx"), need("haproxy")
    nginx_port, haproxy_port = free_port(), free_port()
    env = {
        "PIXELPOST_STORE_URL": asyncio.run(postgresql.new_schema()),
        "PIXELPOST_SIGNING_KEY": generate_signing_key(),
        "PIXELPOST_API_TOKEN": TOKEN,
        "APP_WEBHOOK_SECRET": generate_webhook_secret(),
    }
    shared = guide_config(sink_port=sink.port, nginx_port=nginx_port, webhook_port=receiver.port)
    names = ("relay1", "relay2", "tracker1", "tracker2", "dispatch")
    configs = {name: instance_config(shared, tmp_path / name) for name in names}

    # The guide: the schema first, then the relays, the trackers and a dispatcher.
    migrated = subprocess.run(
        [str(BIN / "pixelpost"), "migrate", "-c", str(configs["relay1"])],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated to this version's schema" in migrated.stdout

    def run(name: str) -> Running:
        command = name.rstrip("12")
        return start(
            [str(BIN / "pixelpost"), command, "-c", str(configs[name])], cwd=tmp_path, env=env
        )

    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(run, name) for name in names]
    processes += [future.result() for future in futures if future.exception() is None]
    everyone = [future.result() for future in futures]  # the first failure, if any
    relays, trackers, dispatcher = everyone[:2], everyone[2:4], everyone[4]

    balancer_conf = tmp_path / "haproxy.cfg"
    balancer_conf.write_text(haproxy_config(relays, haproxy_port, tmp_path))
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(balancer_conf)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    proxy_conf = nginx_config(trackers, nginx_port, tmp_path)
    prefix = ["-p", str(tmp_path / "nginx"), "-c", str(proxy_conf)]
    tested = subprocess.run([nginx, "-t", *prefix], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stderr

    balancer = subprocess.Popen(
        [haproxy, "-db", "-f", str(balancer_conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = subprocess.Popen(
        [nginx, *prefix], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        until(lambda: listening("haproxy", haproxy_port, balancer), "HAProxy listening", within=10)
        until(lambda: listening("nginx", nginx_port, proxy), "nginx listening", within=10)
        stats = tmp_path / "haproxy.sock"
        healthy = {"relay1": ("UP", "L7OK"), "relay2": ("UP", "L7OK")}
        seen: list[dict[str, tuple[str, str]]] = [{}]

        def checked_healthy() -> bool:
            seen[0] = haproxy_servers(stats)
            return seen[0] == healthy

        try:
            until(checked_healthy, "HAProxy's checks", within=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen[0]}") from None
        see_it_work(
            relays, trackers, dispatcher, configs["tracker1"], env, haproxy_port, sink, receiver
        )
        one_of_each_down(relays, trackers, stats, haproxy_port, sink, receiver)
        # The third message's Send, Delivery and two Opens came through the dispatchers
        # left, and no event came twice.
        webhook_events(receiver, 12, trackers[0], dispatcher)
        ids = receiver.receiver.delivered_ids
        assert len(set(ids)) == len(ids) == 12
    finally:
        for server in (balancer, proxy):
            server.terminate()
            server.wait(10)

    assert stop_all(everyone) == [0] * len(everyone)
    for running in everyone:
        assert "Traceback" not in running.stderr, running.stderr


def see_it_work(
    relays: list[Running],
    trackers: list[Running],
    dispatcher: Running,
    config: Path,
    env: dict[str, str],
    haproxy_port: int,
    sink: ThreadedSink,
    receiver: ThreadedReceiver,
) -> None:
    # One message through each relay: HAProxy takes turns, and names the mailer.
    for recipient in READERS:
        with smtplib.SMTP("127.0.0.1", haproxy_port, source_address=(CLIENT, 0)) as client:
            client.send_message(newsletter(recipient), "news@example.com", [recipient])
    until(lambda: [len(accepted(relay)) for relay in relays] == [1, 1], "one for each relay")
    for relay in relays:
        assert accepted(relay)[0].rstrip().endswith(f"client={CLIENT}")
    sink.handler.wait_for(2)
    delivered_at = time.monotonic()
    copies = {arrival.rcpt_tos[0]: tracked(arrival.content) for arrival in sink.handler.arrivals}
    assert sorted(copies) == sorted(READERS)

    # Each person opens and clicks their copy, through nginx, once the relays have
    # recorded the copies (the Deliveries are published) and after the scanners' window.
    until(lambda: delivered(receiver) == 2, "the two Deliveries", within=15)
    time.sleep(max(0.0, delivered_at + CLICK_WINDOW + 0.5 - time.monotonic()))
    for recipient, (pixel, link, _) in copies.items():
        status, headers, body = as_a_person(pixel, recipient)
        assert (status, headers["Content-Type"]) == (200, "image/gif")
        assert len(body) == 43
        status, headers, _ = as_a_person(link, recipient)
        assert (status, headers["Location"]) == (302, LINK)
    # nginx took turns too: each tracker answered two of the four hits, one on each
    # relay's copy, and so verified what both relays signed.
    answered = [hits_answered(tracker) for tracker in trackers]
    assert [opens + clicks for opens, clicks in answered] == [2, 2]
    assert (sum(o for o, _ in answered), sum(c for _, c in answered)) == (2, 2)
    # The unsubscribe page is public too (a GET only shows it).
    for recipient, (_, _, unsubscribe) in copies.items():
        status, _, body = as_a_person(unsubscribe, recipient)
        assert status == 200
        assert b"<form" in body

    # The funnel, as the command line reads it from the store (the dispatchers count
    # about once a second).
    environ = {**os.environ, **env}
    until(
        lambda: people_only(funnel(config, environ)) == PEOPLE_ONLY,
        "the funnel of two people who opened and clicked",
        within=15,
    )

    # Every event reached the webhook, from one dispatcher or the other.
    events = webhook_events(receiver, 8, *trackers, dispatcher)
    assert sorted(event["eventType"] for event in events) == sorted(
        ["Send", "Delivery", "Open", "Click"] * 2
    )
    for event in events:
        if event["eventType"] == "Send":
            assert event["mail"]["tags"]["ses:source-ip"] == [CLIENT]
        if event["eventType"] in ("Open", "Click"):
            kind = event["eventType"].lower()
            recipient = event["mail"]["destination"][0]
            assert event[kind]["ipAddress"] == READERS[recipient]

    dashboard_sessions_hold(f"http://127.0.0.1:{urlsplit(copies['ann@example.org'][0]).port}")


def one_of_each_down(
    relays: list[Running],
    trackers: list[Running],
    stats: Path,
    haproxy_port: int,
    sink: ThreadedSink,
    receiver: ThreadedReceiver,
) -> None:
    """With a relay and a tracker stopped (and the tracker's dispatcher), HAProxy sends
    mail to the other relay once its check fails, and nginx the pixel to the other
    tracker."""
    assert relays[1].stop() == 0
    assert trackers[1].stop() == 0
    until(lambda: haproxy_servers(stats)["relay2"][0] == "DOWN", "relay2 DOWN", within=10)
    recipient = "ann@example.org"
    with smtplib.SMTP("127.0.0.1", haproxy_port, source_address=(CLIENT, 0)) as client:
        client.send_message(newsletter(recipient), "news@example.com", [recipient])
    sink.handler.wait_for(3)
    pixel, _, _ = tracked(sink.handler.arrivals[-1].content)
    # The relay records a copy once the upstream has answered; its reader opens it
    # after that (the Delivery is published), as people do.
    until(lambda: delivered(receiver) == 3, "the third Delivery", within=15)
    for _ in range(2):  # one of them would have gone to the stopped tracker
        status, _, _ = as_a_person(pixel, recipient)
        assert status == 200
    until(lambda: len(accepted(relays[0])) == 2, "the third message taken by relay1")


def dashboard_sessions_hold(base: str) -> None:
    """Signed in through nginx, a browser stays signed in: its requests go to the
    tracker that holds its session."""
    status, headers, _ = get(
        f"{base}/dashboard/login",
        {"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
        body=f"token={TOKEN}",
    )
    assert status == 303
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    for _ in range(4):
        status, _, body = get(f"{base}/dashboard", {"Cookie": cookie})
        assert status == 200
        assert b'name="token"' not in body  # the dashboard, not the sign-in form
