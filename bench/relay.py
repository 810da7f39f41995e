"""End-to-end relay throughput through SMTP, side by side in one run.

    .venv/bin/python -m bench.relay [--kind both|text|html] [--messages 400] [--sessions 20]
                                    [--rounds 3] [--systems tracked,untracked,...]
                                    [--workers N]   (pixelpost's relay.workers; default: cores)

Postfix's `smtp-source` sends the same message file, one recipient each, through each
system in turn to Postfix's `smtp-sink` (Debian's postfix package provides all three):

  tracked       pixelpost (tracking on)    `pixelpost relay`, a configuration set that
                                           tracks opens and clicks
  untracked     pixelpost (tracking off)   the same relay, a set that tracks nothing
  uvloop        pixelpost (on, uvloop)     tracked, on uvloop's event loop
                                           (PIXELPOST_EVENT_LOOP=uvloop) where the relay
                                           keeps the standard library's: it measured
                                           slower on uvloop
  passthrough   aiosmtpd -> aiosmtplib     bench/passthrough.py, the plain proxy
  postfix       postfix                    a throwaway Postfix relaying everything
                                           (tests/postfix.py; needs root)
  sink          smtp-sink alone            smtp-source straight to smtp-sink: the
                                           ceiling of the measurement itself

Both kinds of message by default: 20 KB of plain text and a 100 KB HTML newsletter.
A 250 from pixelpost or Postfix only means "queued", so the clock runs from the start of
smtp-source until smtp-sink has counted every message of the run (its `-c` counter, read
from a pipe) and smtp-source has finished. smtp-source stops at the first reply that
refuses anything (a 421 at the greeting, a 4xx or 5xx to a command or a message), and
the benchmark with it (INVALID, exit status 1): a refused message is never counted as
throughput. The systems' connection limits are set above the load, as every session
comes from 127.0.0.1. Each system is started afresh for each round and warmed up with
a few messages first; rounds alternate the systems so that a slow moment of the machine
hits all of them. The report gives each system's median messages per second and the
ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.messages import html_message, text_message
from tests.net import free_port
from tests.postfix import throwaway_postfix
from tests.relay_config import relay_config

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent

TRACKED = "pixelpost (tracking on)"
UNTRACKED = "pixelpost (tracking off)"
UVLOOP = "pixelpost (on, uvloop)"
PASSTHROUGH = "aiosmtpd -> aiosmtplib"
POSTFIX = "postfix"
SINK = "smtp-sink alone"
SYSTEMS = {
    "tracked": TRACKED,
    "untracked": UNTRACKED,
    "uvloop": UVLOOP,
    "passthrough": PASSTHROUGH,
    "postfix": POSTFIX,
    "sink": SINK,
}
REFERENCES = {UNTRACKED: "vs tracking off", PASSTHROUGH: "vs pass-through", POSTFIX: "vs postfix"}
KINDS = {"text": "20 KB plain text", "html": "100 KB HTML newsletter"}

STALL_TIMEOUT = 60.0
"""Give up when the sink has counted nothing new for this long."""
SETTLE = 0.5
"""Seconds a system gets after the sink has every message before it is stopped: the
sink counts a message before its reply reaches the relay."""
STOP_TIMEOUT = 10.0
"""Seconds from SIGTERM to SIGKILL."""
SEND_TIMEOUT = 600.0
"""Seconds smtp-source may take for one run."""


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


def stop(process: subprocess.Popen[bytes], name: str, timeout: float = STOP_TIMEOUT) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(
            f"warning: {name} (pid {process.pid}) still running"
            f" {timeout:.0f}s after SIGTERM: killed",
            file=sys.stderr,
            flush=True,
        )
        process.kill()
        process.wait()


@contextlib.contextmanager
def running(args: list[str], port: int, cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The process, once it listens on `port`; its stderr goes to `log`, whose end is
    shown if anything fails meanwhile."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_port(port, process)
        yield process
    except BaseException:
        lines = log.read_text(errors="replace").splitlines()[-20:]
        print(f"--- the end of {' '.join(args)}'s log:", *lines, "---", sep="\n", file=sys.stderr)
        raise
    finally:
        stop(process, " ".join(args))


class SinkCounter:
    """Reads smtp-sink's `-c` counters ("sess=S quit=Q mesg=M\\r", written after every
    message and session) from its stdout, in a thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._count = 0
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def _read(self, stream: IO[bytes]) -> None:
        pending = b""
        while chunk := os.read(stream.fileno(), 65536):
            *records, pending = re.split(rb"[\r\n]", pending + chunk)
            counts = [int(m[1]) for r in records if (m := re.search(rb"mesg=(\d+)", r))]
            if counts:
                with self._changed:
                    self._count = counts[-1]
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, total: int, stall_timeout: float = STALL_TIMEOUT) -> None:
        """Until the sink has counted `total` messages; SystemExit if it stops counting
        short of that for `stall_timeout` seconds."""
        with self._changed:
            last = self._count
            deadline = time.monotonic() + stall_timeout
            while self._count < total:
                if self._closed:
                    raise SystemExit(
                        f"INVALID: smtp-sink exited after {self._count} of {total} messages"
                    )
                if self._count != last:
                    last = self._count
                    deadline = time.monotonic() + stall_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SystemExit(
                        f"INVALID: smtp-sink counted nothing for {stall_timeout:.0f}s:"
                        f" {self._count} of {total} messages arrived"
                    )
                self._changed.wait(remaining)


@contextlib.contextmanager
def smtp_sink(port: int) -> Iterator[SinkCounter]:
    """Debian's smtp-sink on 127.0.0.1:`port`, counting what it receives."""
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install Debian's postfix package")
    process = subprocess.Popen(
        ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        counter = SinkCounter(process.stdout)
        wait_for_port(port, process)
        yield counter
    finally:
        stop(process, "smtp-sink")
        process.stdout.close()


def send_all(port: int, message: Path, messages: int, sessions: int) -> None:
    """smtp-source sends `messages` and gets every reply; SystemExit, INVALID, when the
    system refused any of them (smtp-source stops there) or it took too long."""
    command = [
        "smtp-source",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-F",
        str(message),
        "-f",
        "news@example.com",
        "-t",
        "reader@example.org",
        f"127.0.0.1:{port}",
    ]
    try:
        result = subprocess.run(
            command, stderr=subprocess.PIPE, text=True, check=False, timeout=SEND_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"INVALID: smtp-source had not sent {messages} messages to port {port}"
            f" after {SEND_TIMEOUT:.0f}s"
        ) from None
    if result.returncode != 0:
        raise SystemExit(
            f"INVALID: smtp-source to port {port} stopped ({result.returncode}),"
            f" not every message accepted: {result.stderr.strip()}"
        )


@dataclass(frozen=True)
class Timing:
    sent: float
    """Seconds until smtp-source had every reply."""
    delivered: float
    """Seconds until that and smtp-sink had counted every message."""


def measure(sink: SinkCounter, port: int, message: Path, messages: int, sessions: int) -> Timing:
    target = sink.count + messages
    start = time.perf_counter()
    send_all(port, message, messages, sessions)
    sent = time.perf_counter() - start
    sink.wait_for(target)
    return Timing(sent, time.perf_counter() - start)


@dataclass(frozen=True)
class System:
    name: str
    start: Callable[[], contextlib.AbstractContextManager[int]]
    """Starts the system; the context is its SMTP port."""


@contextlib.contextmanager
def serving(args: list[str], port: int, log: Path, spool: Path | None = None) -> Iterator[int]:
    try:
        with running(args, port, ROOT, log):
            yield port
            time.sleep(SETTLE)
    finally:
        if spool is not None:  # nothing carries over to the next start, even after a kill
            shutil.rmtree(spool, ignore_errors=True)


@contextlib.contextmanager
def listening(port: int) -> Iterator[int]:
    yield port


@contextlib.contextmanager
def postfix_serving(workdir: Path, port: int, sink_port: int) -> Iterator[int]:
    with throwaway_postfix(workdir, port, sink_port):
        yield port
        time.sleep(SETTLE)


def build_systems(keys: list[str], workdir: Path, sink_port: int, workers: int) -> list[System]:
    systems = []
    for key in keys:
        name = SYSTEMS[key]
        port = free_port()
        start: Callable[[], contextlib.AbstractContextManager[int]]
        if key in ("tracked", "untracked", "uvloop"):
            if key == "uvloop":  # a folder of its own: its file is named after its set
                (workdir / key).mkdir(exist_ok=True)
                config = relay_config(workdir / key, port, sink_port, "tracked", workers)
            else:
                config = relay_config(workdir, port, sink_port, key, workers)
            args = [str(BIN / "pixelpost"), "relay", "-c", str(config)]
            if key == "uvloop":
                args = ["env", "PIXELPOST_EVENT_LOOP=uvloop", *args]
            log = workdir / f"{key}.log"
            start = functools.partial(serving, args, port, log, workdir / "spool")
        elif key == "passthrough":
            args = [sys.executable, "-m", "bench.passthrough", str(port), str(sink_port)]
            start = functools.partial(serving, args, port, workdir / "passthrough.log")
        elif key == "postfix":
            start = functools.partial(postfix_serving, workdir / "postfix", port, sink_port)
        else:
            start = functools.partial(listening, sink_port)
        systems.append(System(name, start))
    return systems


def report(kind: str, size: int, rates: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(
        f"\n{KINDS[kind]}: {size:,} bytes, {args.messages} messages per round,"
        f" {args.sessions} sessions, {args.rounds} rounds, {os.cpu_count()} cores,"
        f" pixelpost relay.workers = {args.workers};"
        " end to end, until smtp-sink has every message"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    references = [name for name in REFERENCES if name in medians]
    print(f"{'system':26} {'msg/s':>8}" + "".join(f" {REFERENCES[r]:>16}" for r in references))
    for name, rate in medians.items():
        ratios = "".join(f" {rate / medians[r]:15.2f}x" for r in references)
        print(f"{name:26} {rate:8.1f}{ratios}")


def parse_systems(value: str) -> list[str]:
    keys = [key.strip() for key in value.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SYSTEMS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"{','.join(unknown) or 'nothing'}: pick from {','.join(SYSTEMS)}"
        )
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kind",
        choices=["both", *KINDS],
        default="both",
        help="20 KB plain text, 100 KB HTML newsletter, or both one after the other (default)",
    )
    parser.add_argument("--messages", type=int, default=400, help="messages per system per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="pixelpost's relay.workers (default: one per core, as Postfix uses them all)",
    )
    parser.add_argument(
        "--systems",
        type=parse_systems,
        default=list(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    args = parser.parse_args()
    kinds = list(KINDS) if args.kind == "both" else [args.kind]
    warmup = min(50, args.messages)

    results: list[tuple[str, int, dict[str, list[float]]]] = []
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o711)  # Postfix's daemons, as the postfix user, work in here
        sink_port = free_port()
        with smtp_sink(sink_port) as sink:
            systems = build_systems(args.systems, workdir, sink_port, args.workers)
            for kind in kinds:
                message = workdir / f"{kind}.eml"
                data = html_message() if kind == "html" else text_message()
                message.write_bytes(data.replace(b"\r\n", b"\n"))  # smtp-source sends CRLF
                rates: dict[str, list[float]] = {system.name: [] for system in systems}
                for round_number in range(args.rounds):
                    for system in systems:
                        with system.start() as port:
                            measure(sink, port, message, warmup, args.sessions)
                            timing = measure(sink, port, message, args.messages, args.sessions)
                        rate = args.messages / timing.delivered
                        rates[system.name].append(rate)
                        print(
                            f"{kind} round {round_number + 1}: {system.name:26} {rate:7.1f} msg/s"
                            f" (all replies after {timing.sent:5.2f}s,"
                            f" all at the sink after {timing.delivered:5.2f}s)",
                            flush=True,
                        )
                results.append((kind, len(data), rates))
    for kind, size, rates in results:
        report(kind, size, rates, args)


if __name__ == "__main__":
    main()
