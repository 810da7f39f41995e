"""Runs the `pixelpost` command in a subprocess, as a user would, and reads where it
listens from its startup banner."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sink import ThreadedSink

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0


_REPLY = re.compile(rb"^[2-5][0-9][0-9][ -]")
REPLY_TIMEOUT = 10.0


def smtp_reply(stream: socket.socket, buffer: bytearray) -> bytes:
    """The last line of one whole, well-formed SMTP reply, within `REPLY_TIMEOUT`."""
    deadline = time.monotonic() + REPLY_TIMEOUT
    while True:
        end = buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            assert _REPLY.match(line), line
            if line[3:4] == b" ":
                return line
            continue
        stream.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = stream.recv(65536)
        assert chunk, "closed without a reply"
        buffer += chunk


def smtp_command(stream: socket.socket, buffer: bytearray, line: bytes) -> bytes:
    stream.sendall(line + b"\r\n")
    return smtp_reply(stream, buffer)


def doc_block(language: str, document: str) -> str:
    """The one example in `language` (```nginx, ```haproxy) of `document` (a path from
    the repository's root), as written there: the tests run what users copy."""
    text = (ROOT / document).read_text()
    blocks: list[str] = re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, f"{document} has one {language} example"
    return blocks[0]


def readme_block(language: str) -> str:
    """The README's one example in `language`."""
    return doc_block(language, "README.md")


@dataclass
class Running:
    process: subprocess.Popen[str]
    banner: list[str]
    stderr_lines: list[str] = field(default_factory=list)
    stdout_rest: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def value(self, label: str) -> str:
        for line in self.banner:
            match = re.match(rf"\s+{re.escape(label)}\s+(\S+)", line)
            if match:
                return match[1]
        raise AssertionError(f"no {label!r} in the banner: {self.banner}")

    @property
    def smtp_port(self) -> int:
        return int(self.value("smtp").rsplit(":", 1)[1])

    @property
    def http_url(self) -> str:
        return self.value("http")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout}s after signal {signum}; its log:\n{self.stderr}"
            ) from None
        finally:
            self.process.kill()

    def close(self) -> None:
        """Close the pipes once the process (and any child holding them) is gone and
        the output has been read."""
        for thread in self.readers:
            thread.join(10)
        if any(thread.is_alive() for thread in self.readers):
            raise AssertionError("a process still holds pixelpost's output open")
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


def _pump(stream: object, into: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)


def start(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Running:
    """Start a command and wait for its banner ("Press Ctrl-C to stop.")."""
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str | None] = queue.Queue()
    err: queue.Queue[str | None] = queue.Queue()
    running = Running(process=process, banner=[])
    running.readers = [
        threading.Thread(target=_pump, args=(process.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, err), daemon=True),
    ]
    for reader in running.readers:
        reader.start()

    def collect_stderr() -> None:
        while (line := err.get()) is not None:
            running.stderr_lines.append(line)

    threading.Thread(target=collect_stderr, daemon=True).start()
    while True:
        try:
            line = out.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            process.kill()
            raise AssertionError(
                f"no banner within {STARTUP_TIMEOUT}s: {running.stderr}"
            ) from None
        if line is None:
            process.wait()
            raise AssertionError(
                f"exited {process.returncode} before its banner: {running.stderr}"
            )
        running.banner.append(line)
        if line.startswith("Press Ctrl-C"):
            break

    def collect_stdout() -> None:
        while (line := out.get()) is not None:
            running.stdout_rest.append(line)

    threading.Thread(target=collect_stdout, daemon=True).start()
    return running


@pytest.fixture
def sink() -> Iterator[ThreadedSink]:
    sink = ThreadedSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def postfix_dir() -> Iterator[Path]:
    """A directory for a throwaway Postfix (tests/postfix.py) that the postfix user can
    reach: pytest's own are private to root."""
    path = Path(tempfile.mkdtemp(prefix="pixelpost-postfix-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[list[Running]]:
    """Processes a test started; killed at the end if still running."""
    started: list[Running] = []
    yield started
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
        running.process.wait()
        running.close()


def until(condition: Callable[[], object], what: str = "condition", within: float = 20.0) -> None:
    """Wait for `condition` to hold, looking every 20 ms for up to `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.02)


def delivered(maildir: Path, count: int = 1, within: float = 15.0) -> list[Path]:
    """The messages in a maildir upstream's new/, once `count` have arrived: the relay
    answers 250 once a message is spooled and delivers it in the background."""
    new = maildir / "new"
    deadline = time.monotonic() + within
    while True:
        found = sorted(new.iterdir()) if new.is_dir() else []
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{new}: expected {count} messages, found {len(found)}")
        time.sleep(0.02)
