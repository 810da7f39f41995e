"""Kill the relay with SIGKILL in the middle of a load, start it again, and count.

`pixelpost relay` runs in a subprocess and delivers to a counting aiosmtpd sink. Each
message carries its number in an `X-Seq` header; clients send them over `sessions`
connections. Once `kill_after` messages got 250, the relay is killed with SIGKILL, the
clients see their connections drop, and the relay is started again on the same spool;
the clients send the rest. Once the spool is empty, the sink's count is compared with
the 250s:

  lost        got 250 and never reached the sink (must be 0: RFC 5321 section 6.1)
  duplicated  reached the sink more than once (possible: a delivery the kill cut off
              after the upstream's 250 but before the spool file was removed is sent
              again, as with every MTA)
  in flight   sent but with no answer when the relay died: the client must retry
              these, and some may still arrive (the spool had them before the 250)
  refused     answered with a refusal (a 421 at the greeting, a 4xx or 5xx), and
  failed      cut off other than by the kill: either makes the round invalid, as the
              load was not the one asked for

`tests/e2e/test_crash.py` asserts that nothing is lost; `python -m bench.crash` runs
rounds of it and prints the report.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from pixelpost.app.runtime import spool_counts
from tests.net import free_port
from tests.relay_config import relay_config
from tests.sink import ThreadedSMTP

BIN = Path(sys.executable).parent
_SEQ = re.compile(rb"^X-Seq: (\d+)\r?$", re.MULTILINE)


@dataclass
class CrashReport:
    messages: int
    accepted: set[int] = field(default_factory=set)
    """Messages the relay answered 250 to, before or after the kill."""
    in_flight: set[int] = field(default_factory=set)
    """Messages sent to the relay that died before it answered."""
    arrivals: collections.Counter[int] = field(default_factory=collections.Counter)
    """How often each message reached the sink."""
    refused: list[tuple[int | None, str]] = field(default_factory=list)
    """Messages (None: a session, before any message) the relay answered with a
    refusal, and its reply."""
    failed: list[tuple[int | None, str]] = field(default_factory=list)
    """Messages (or sessions) cut off by anything but the kill, and the error."""
    accepted_before_kill: int = 0
    seconds: float = 0.0

    @property
    def lost(self) -> set[int]:
        return self.accepted - set(self.arrivals)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.arrivals.values())

    @property
    def in_flight_arrived(self) -> int:
        return len(self.in_flight & set(self.arrivals))

    @property
    def unsent(self) -> int:
        """Messages no client got to send: every client had stopped."""
        tried = self.accepted | self.in_flight
        tried |= {seq for seq, _ in self.refused + self.failed if seq is not None}
        return self.messages - len(tried)

    @property
    def problems(self) -> list[str]:
        """Why the round is not the one asked for: refusals, failures, unsent messages."""
        found = [f"refused {_which(seq)}: {reply}" for seq, reply in self.refused]
        found += [f"failed {_which(seq)}: {error}" for seq, error in self.failed]
        if self.unsent:
            found.append(f"{self.unsent} messages never sent")
        return found

    def summary(self) -> str:
        return (
            f"{self.messages} messages, relay killed (SIGKILL) after"
            f" {self.accepted_before_kill} were accepted, restarted on the same spool\n"
            f"  accepted (250)          {len(self.accepted)}\n"
            f"  in flight at the kill   {len(self.in_flight)}"
            f" (no answer; {self.in_flight_arrived} of them arrived anyway)\n"
            f"  arrived at the sink     {len(self.arrivals)} distinct,"
            f" {sum(self.arrivals.values())} in all\n"
            f"  refused                 {len(self.refused)}\n"
            f"  failed (not the kill)   {len(self.failed)}\n"
            f"  never sent              {self.unsent}\n"
            f"  lost                    {len(self.lost)}\n"
            f"  duplicated              {self.duplicates}\n"
            f"  took                    {self.seconds:.1f}s"
        )


def _which(seq: int | None) -> str:
    return "a session" if seq is None else f"message {seq}"


class CountingSink:
    """An aiosmtpd upstream on its own thread that counts messages by `X-Seq`."""

    def __init__(self) -> None:
        self.arrivals: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._smtp = ThreadedSMTP(self)
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        match = _SEQ.search(envelope.original_content)
        if match is None:
            return "554 5.6.0 No X-Seq header"
        with self._lock:
            self.arrivals[int(match[1])] += 1
        return "250 2.0.0 Ok"

    def counted(self) -> collections.Counter[int]:
        with self._lock:
            return collections.Counter(self.arrivals)

    def __enter__(self) -> CountingSink:
        self.port = self._smtp.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._smtp.stop()


def message(seq: int) -> bytes:
    return (
        "From: news@example.com\r\nTo: reader@example.org\r\n"
        f"Subject: message {seq}\r\nX-Seq: {seq}\r\n"
        'Content-Type: text/html; charset="utf-8"\r\n\r\n'
        f'<p>Message {seq}, with <a href="https://example.com/{seq}">a link</a>.</p>\r\n'
    ).encode()


@contextlib.contextmanager
def relay_process(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`pixelpost relay`, once it listens; killed at the end if still running."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [str(BIN / "pixelpost"), "relay", "-c", str(config)],
            cwd=config.parent,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the relay exited with {process.returncode}: see {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the relay does not listen on {port}: see {log}")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


class Load:
    """Clients that send numbered messages until there are none left, and stop at the
    first error: the connection lost (the relay died) or a refusal, which is counted."""

    def __init__(self, port: int, numbers: Iterator[int], report: CrashReport) -> None:
        self._port = port
        self._numbers = numbers
        self._report = report
        self._clients: list[asyncio.Task[None]] = []
        self.killed = False
        """Set when the relay is killed: connections lost from then on are expected."""

    async def client(self, kill_at: int | None, kill: asyncio.Event) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self._port, timeout=30)
        seq: int | None = None
        try:
            await smtp.connect()
            for seq in self._numbers:
                if kill_at is not None and len(self._report.accepted) >= kill_at:
                    kill.set()
                self._report.in_flight.add(seq)
                await smtp.sendmail("news@example.com", ["reader@example.org"], message(seq))
                self._report.in_flight.discard(seq)
                self._report.accepted.add(seq)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            # An answer, even one read after the kill (it was sent before): not in flight.
            if seq is not None:
                self._report.in_flight.discard(seq)
            self._report.refused.append((seq, str(exc)))
        except (aiosmtplib.SMTPException, OSError) as exc:
            if not self.killed:
                if seq is not None:
                    self._report.in_flight.discard(seq)
                self._report.failed.append((seq, repr(exc)))
        finally:
            smtp.close()

    async def run(self, sessions: int, kill_at: int | None = None) -> None:
        """Send until done or, with `kill_at`, until it is time to kill the relay (the
        clients go on until they see it gone: `ended`)."""
        kill = asyncio.Event()
        self._clients = [asyncio.create_task(self.client(kill_at, kill)) for _ in range(sessions)]
        done = asyncio.gather(*self._clients)
        if kill_at is None:
            await done
            return
        waiting = asyncio.create_task(kill.wait())
        either: list[asyncio.Future[Any]] = [waiting, done]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not kill.is_set():
            raise RuntimeError(
                f"the load ended before {kill_at} messages were accepted: "
                + "; ".join(self._report.problems[:3])
            )

    async def ended(self) -> None:
        """Once every client has stopped (after the kill: on its next read)."""
        await asyncio.gather(*self._clients)


def run(
    workdir: Path,
    *,
    messages: int = 2000,
    kill_after: int = 800,
    sessions: int = 10,
    settle: float = 60.0,
) -> CrashReport:
    """The scenario; `settle` bounds the wait for the restarted relay to deliver."""
    report = CrashReport(messages=messages)
    started = time.monotonic()
    with CountingSink() as sink:
        port = free_port()
        config = relay_config(workdir, port, sink.port)
        spool = workdir / "spool"
        log = workdir / "relay.log"
        numbers = iter(range(1, messages + 1))
        with relay_process(config, port, log) as relay:
            load = Load(port, numbers, report)

            async def first_half() -> None:
                await load.run(sessions, kill_at=kill_after)
                load.killed = True  # no client runs between these two lines
                os.kill(relay.pid, signal.SIGKILL)
                report.accepted_before_kill = len(report.accepted)
                await load.ended()

            asyncio.run(first_half())
            relay.wait()
        unanswered = set(report.in_flight)
        with relay_process(config, port, log):
            report.in_flight = set()
            asyncio.run(Load(port, numbers, report).run(sessions))
            report.in_flight = unanswered - report.accepted
            # A delivery holds its spool file until it is over: once the spool is empty,
            # every message is delivered, and no copy is still on its way.
            deadline = time.monotonic() + settle
            while (spool_counts(spool) or (0, 0))[0] and time.monotonic() < deadline:
                time.sleep(0.1)
        report.arrivals = sink.counted()
    report.seconds = time.monotonic() - started
    return report
