"""`--log-format json`: every line pixelpost writes on standard error is a JSON object,
in its relay processes too, and lines about a message or a client carry them as
fields."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import subprocess
from pathlib import Path

from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, start, until
from tests.sink import ThreadedSink

MESSAGE = b"From: sender@example.com\r\nTo: rcpt@example.org\r\nSubject: logs\r\n\r\nHello.\r\n"


def entries(running: Running) -> list[dict[str, object]]:
    """Every line written on standard error so far, each one a JSON object."""
    found = []
    for line in list(running.stderr_lines):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(entry, dict), line
        found.append(entry)
    return found


def stopped(running: Running) -> bool:
    """Whether the line that says pixelpost stops has been read (and all before it)."""
    return any(e["message"] == "stopping (signal received)" for e in entries(running))


def test_json_lines_carry_the_message_id_and_the_peer(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"smtp://127.0.0.1:{sink.port}", tmp_path, relay="workers = 2"))
    running = start(
        [str(BIN / "pixelpost"), "--log-format", "json", "serve", "-c", str(config)], cwd=tmp_path
    )
    processes.append(running)

    def listening() -> set[object]:
        return {
            e["process"]
            for e in entries(running)
            if str(e["message"]).startswith("relay listening on")
        }

    until(lambda: len(listening()) == 2)  # the further relay process logs in JSON too
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("sender@example.com")
        client.rcpt("rcpt@example.org")
        code, reply = client.data(MESSAGE)
        assert client.sock is not None
        peer = f"127.0.0.1:{client.sock.getsockname()[1]}"
    assert code == 250
    match = re.search(rb"queued as (\S+)", reply)
    assert match, reply
    message_id = match[1].decode()
    sink.handler.wait_for(1)

    def about_it() -> list[dict[str, object]]:
        return [e for e in entries(running) if e.get("message_id") == message_id]

    until(lambda: any("delivered to" in str(e["message"]) for e in about_it()))
    assert running.stop(signal.SIGINT) == 0
    until(lambda: stopped(running))

    [accepted] = [e for e in about_it() if "from=<sender@example.com>" in str(e["message"])]
    assert accepted["peer"] == peer
    assert accepted["logger"] == "relay.frontdoor.handler"
    assert accepted["level"] == "INFO"
    assert str(accepted["message"]).startswith(f"{message_id}: from=<sender@example.com> to=1")
    assert all(isinstance(e["process"], int) and e["time"] for e in entries(running))


def test_log_format_after_the_command_covers_aiosmtpds_lines(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"smtp://127.0.0.1:{sink.port}", tmp_path))
    running = start(
        [
            str(BIN / "pixelpost"),
            "relay",
            "-c",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        cwd=tmp_path,
    )
    processes.append(running)
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.ehlo()
        client.noop()

    until(lambda: any(e["logger"] == "mail.log" for e in entries(running)))
    assert running.stop(signal.SIGINT) == 0
    until(lambda: stopped(running))  # and every line until then was JSON


def test_an_unknown_log_format_is_a_usage_error_naming_the_choices(tmp_path: Path) -> None:
    for args in (["--log-format", "xml", "serve"], ["serve", "--log-format", "xml"]):
        result = subprocess.run(
            [str(BIN / "pixelpost"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        [error] = [line for line in result.stderr.splitlines() if "error:" in line]
        assert "--log-format: invalid choice: 'xml'" in error
        assert "text" in error
        assert "json" in error
