"""A new user's first hour, from the command line: a configuration used from another
folder, commands run against a configuration that never ran, a second installation on
the same port, placeholder hosts, and an upstream that is not there."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from pixelpost import __version__
from pixelpost.store import SQLiteStore
from pixelpost.store.sqlite.schema import migrations
from tests.e2e.conftest import BIN, ROOT, Running, delivered, start, until
from tests.net import free_port
from tests.sink import ThreadedSink

MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: rcpt@example.org\r\n"
    b"Subject: first hour\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<html><body><a href="https://shop.example.org/">shop</a></body></html>\r\n'
)


def relative_config(folder: Path, *, smtp_port: int = 0, extra: str = "") -> Path:
    """A configuration as the example writes it: every path relative."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pixelpost.toml"
    path.write_text(
        f"""
default_config_set = "default"

[relay]
listen = "127.0.0.1:{smtp_port}"
hostname = "relay.test"
spool = "./var/spool"
{extra}

[upstream]
url = "maildir:./var/outbox"

[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.pixelpost.dev"

[store]
url = "sqlite:///./var/pixelpost.db"

[signing]
key_file = "./var/signing.key"

[config_sets.default]
destinations = ["archive"]

[config_sets.marketing]
tracking_url = "https://click.example.com"
destinations = ["archive"]

[destinations.archive]
type = "file"
path = "./var/events.jsonl"
"""
    )
    return path


def pixelpost(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pixelpost"), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def send(port: int, message: bytes = MESSAGE) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("sender@example.com", ["rcpt@example.org"], message)


def test_relative_paths_are_read_from_the_configuration_files_folder(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = relative_config(tmp_path / "run1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    running = start(
        [str(BIN / "pixelpost"), "serve", "-c", "../run1/pixelpost.toml"], cwd=elsewhere
    )
    processes.append(running)
    assert running.value("spool") == str(tmp_path / "run1" / "var" / "spool")
    assert running.value("store") == str(tmp_path / "run1" / "var" / "pixelpost.db")
    send(running.smtp_port)
    delivered(tmp_path / "run1" / "var" / "outbox")
    assert running.stop(signal.SIGINT) == 0
    assert list(elsewhere.iterdir()) == []  # nothing made where the command ran

    # From yet another folder, the same file finds the same store.
    stats = pixelpost("stats", "-c", str(config.relative_to(tmp_path)), "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert '"sent": 1' in stats.stdout
    # ... and so does PIXELPOST_CONFIG, the default for -c.
    named = pixelpost("stats", "--json", cwd=elsewhere, env={"PIXELPOST_CONFIG": str(config)})
    assert named.returncode == 0, named.stderr
    assert '"sent": 1' in named.stdout


@pytest.mark.parametrize(
    "command", [["stats"], ["events", "dead-letters"], ["events", "replay"], ["queue"]]
)
def test_commands_that_read_refuse_a_configuration_that_never_ran(
    tmp_path: Path, command: list[str]
) -> None:
    relative_config(tmp_path / "never-ran")

    result = pixelpost(*command, "-c", "never-ran/pixelpost.toml", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    store, spool = tmp_path / "never-ran/var/pixelpost.db", tmp_path / "never-ran/var/spool"
    expected = (
        f"pixelpost: no spool at {spool} (relay.outbound.spool)"
        if command == ["queue"]
        else f"pixelpost: no store at {store} (store.url): has pixelpost run with this "
        "configuration?"
    )
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "never-ran" / "var").exists()  # nothing created


def test_a_missing_file_named_by_pixelpost_config_is_an_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    result = pixelpost("stats", cwd=tmp_path, env={"PIXELPOST_CONFIG": "nowhere.toml"})

    assert result.returncode == 1
    assert result.stderr.startswith(
        "pixelpost: nowhere.toml (named by PIXELPOST_CONFIG): cannot read the configuration file"
    )


def test_a_second_installation_cannot_take_a_share_of_the_port(
    tmp_path: Path, processes: list[Running]
) -> None:
    first = start(
        [str(BIN / "pixelpost"), "relay", "-c", "pixelpost.toml"],
        cwd=relative_config(tmp_path / "first", extra="workers = 2").parent,
    )
    processes.append(first)
    port = first.smtp_port
    until(lambda: first.stderr.count("relay listening on") == 2, "both relay processes")

    second = pixelpost(
        "relay",
        "-c",
        str(relative_config(tmp_path / "second", smtp_port=port, extra="workers = 2")),
        cwd=tmp_path,
    )

    assert second.returncode == 1
    assert f"cannot listen for SMTP on 127.0.0.1:{port}: Address already in use" in second.stderr
    assert "Traceback" not in second.stderr
    # The first one takes every message, from both of its processes.
    for _ in range(10):
        send(port)
    delivered(tmp_path / "first" / "var" / "outbox", 10)
    assert not (tmp_path / "second" / "var" / "outbox").exists()
    assert first.stop(signal.SIGTERM) == 0


def test_the_banner_shows_where_each_sets_links_point(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = relative_config(tmp_path)
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)

    assert running.value("links") == "https://t.pixelpost.dev"
    assert running.value("links marketing") == "https://click.example.com"
    assert running.stop(signal.SIGINT) == 0


def test_check_config_warns_about_the_examples_placeholder_hosts(tmp_path: Path) -> None:
    result = pixelpost("check-config", "-c", str(ROOT / "config.example.toml"), cwd=tmp_path)

    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == f"{ROOT / 'config.example.toml'}: ok"
    warned = {line.split(":")[1].strip() for line in lines[1:]}
    assert {"destinations.app.url", "relay.hostname"} <= warned
    # Its placeholder tracking domain, turned on, is warned about too.
    text = (ROOT / "config.example.toml").read_text()
    turned_on = tmp_path / "pixelpost.toml"
    turned_on.write_text(text.replace('# tracking_url = "https://', 'tracking_url = "https://'))
    result = pixelpost("check-config", "-c", str(turned_on), cwd=tmp_path)
    assert result.returncode == 0
    assert "warning: config_sets.marketing.tracking_url: 'https://click.example.com'" in (
        result.stdout
    )
    assert all(line.startswith("warning: ") for line in lines[1:])


def test_check_config_connect_tries_the_upstream_the_webhooks_and_the_store(
    tmp_path: Path, sink: ThreadedSink
) -> None:
    closed = free_port()
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        f"""
[upstream]
url = "smtp://127.0.0.1:{sink.port}"

[store]
url = "sqlite:///./var/pixelpost.db"

[destinations.app]
type = "webhook"
url = "http://127.0.0.1:{closed}/hook?secret=do-not-print"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""
    )

    result = pixelpost(
        "check-config", "--connect", "--timeout", "5", "-c", str(config), cwd=tmp_path
    )

    assert result.returncode == 1
    found = {
        line.split(": ")[0]: line.split(": ")[1]
        for line in result.stdout.splitlines()[1:]
        if not line.startswith("warning")
    }
    assert found == {"upstream.url": "ok", "destinations.app.url": "FAILED", "store.url": "ok"}
    assert f"127.0.0.1:{sink.port} answered" in result.stdout
    assert "do-not-print" not in result.stdout  # a webhook URL's path may hold a secret
    assert "no store at" in result.stdout
    assert not (tmp_path / "var").exists()  # nothing created
    assert sink.handler.arrivals == []  # nothing sent

    config.write_text(config.read_text().replace(f":{sink.port}", f":{closed}"))
    refused = pixelpost(
        "check-config", "--connect", "--timeout", "5", "-c", str(config), cwd=tmp_path
    )
    assert refused.returncode == 1
    assert f"upstream.url: FAILED: smtp://127.0.0.1:{closed}: 451 4.4.1" in refused.stdout


def test_an_unreachable_upstream_is_said_at_start_in_one_line(
    tmp_path: Path, processes: list[Running]
) -> None:
    closed = free_port()
    config = relative_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            'url = "maildir:./var/outbox"', f'url = "smtp://127.0.0.1:{closed}"'
        )
    )
    running = start([str(BIN / "pixelpost"), "relay", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    send(running.smtp_port)  # still accepted: spooled and retried

    until(lambda: "cannot be reached now" in running.stderr, "the warning")
    assert running.stop(signal.SIGTERM) == 0
    said = [line for line in running.stderr_lines if "cannot be reached now" in line]
    assert len(said) == 1, running.stderr
    assert f"upstream smtp://127.0.0.1:{closed} cannot be reached now" in said[0]
    assert "Traceback" not in running.stderr


def test_an_older_pixelpost_refuses_a_store_a_newer_one_migrated(tmp_path: Path) -> None:
    config = relative_config(tmp_path)
    asyncio.run(_make_store(tmp_path / "var" / "pixelpost.db"))
    with sqlite3.connect(tmp_path / "var" / "pixelpost.db") as db:
        db.execute("PRAGMA user_version = 999")

    result = pixelpost("stats", "-c", str(config), cwd=tmp_path)

    assert result.returncode == 1
    latest = migrations("log")[-1][0]
    assert result.stderr == (
        f"pixelpost: store {tmp_path / 'var' / 'pixelpost.db'} has schema version 999 (log), "
        f"newer than pixelpost {__version__} knows ({latest}): a newer pixelpost has used "
        "it; run that version or a later one (nothing was changed)\n"
    )
    with sqlite3.connect(tmp_path / "var" / "pixelpost.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (999,)
    version = pixelpost("--version", cwd=tmp_path)
    assert version.stdout == f"pixelpost {__version__}\n"


async def _make_store(path: Path) -> None:
    store = await SQLiteStore.open(path)
    await store.close()


def test_a_reload_signal_leaves_the_tracker_running(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = relative_config(tmp_path)
    running = start([str(BIN / "pixelpost"), "tracker", "-c", str(config)], cwd=tmp_path)
    processes.append(running)

    running.process.send_signal(signal.SIGHUP)  # what `systemctl reload` sends

    until(lambda: "SIGHUP: nothing to reload here" in running.stderr, "the SIGHUP line")
    with urllib.request.urlopen(f"{running.http_url}/healthz", timeout=10) as response:
        assert response.status == 200
    assert running.stop(signal.SIGTERM) == 0


def test_check_config_connect_on_the_builtin_defaults_after_serve_ran(tmp_path: Path) -> None:
    asyncio.run(_make_store(tmp_path / "var" / "pixelpost.db"))

    result = pixelpost("check-config", "--connect", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "store.url: ok: var/pixelpost.db opens" in result.stdout
    assert "upstream.url: ok: maildir:var/outbox: can be written" in result.stdout
