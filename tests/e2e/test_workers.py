"""`relay.workers = 2`: two real relay processes share the listening socket and the
spool, and every message is delivered once."""

from __future__ import annotations

import collections
import re
import signal
import smtplib
import time
from pathlib import Path

from pixelpost.app.runtime import spool_counts
from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, start, until
from tests.sink import ThreadedSink

MESSAGES = 60


def pids_saying(running: Running, pattern: str) -> collections.Counter[str]:
    """Log lines matching `pattern`, counted by the process that wrote them."""
    return collections.Counter(
        match[1]
        for line in running.stderr_lines
        if (match := re.search(rf"\[(\d+)\]: .*{pattern}", line))
    )


def test_two_relay_processes_share_the_port_and_deliver_each_message_once(
    tmp_path: Path, sink: ThreadedSink, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"smtp://127.0.0.1:{sink.port}", tmp_path, relay="workers = 2"))
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    assert running.value("smtp").endswith(f":{running.smtp_port}")
    assert "(2 processes)" in "".join(running.banner)
    until(lambda: len(pids_saying(running, "relay listening on")) == 2)

    for seq in range(MESSAGES):  # a connection each: the kernel spreads them over both
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
            client.sendmail(
                "sender@example.com",
                ["rcpt@example.org"],
                f"Subject: {seq}\r\nX-Seq: {seq}\r\n\r\nbody\r\n".encode(),
            )

    sink.handler.wait_for(MESSAGES)
    # A delivery holds its spool file until it is over: once the shared spool is empty,
    # no second delivery of any message can still come.
    until(lambda: spool_counts(tmp_path / "spool") == (0, 0), "the spool emptied")
    seqs = [
        re.search(rb"X-Seq: (\d+)", arrival.content)[1]  # type: ignore[index]
        for arrival in sink.handler.arrivals
    ]
    assert sorted(int(seq) for seq in seqs) == list(range(MESSAGES))
    accepted_by = pids_saying(running, "from=<sender@example.com>")
    assert len(accepted_by) == 2, accepted_by
    assert sum(accepted_by.values()) == MESSAGES
    assert "mail.log" not in running.stderr  # aiosmtpd's command log stays off in workers

    started = time.monotonic()
    assert running.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20
    assert "Traceback" not in running.stderr
