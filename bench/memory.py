"""Peak memory of the relay while 100 clients send it a 10 MB message each at once.

    .venv/bin/python -m bench.memory [--connections 100] [--size 10000000]
                                     [--kind both|html|text] [--systems pixelpost,passthrough]

Starts `pixelpost relay` (the configuration of bench/relay.py, tracking on, with
connection limits above `--connections`: every session comes from 127.0.0.1) relaying to
Debian's `smtp-sink`, opens `--connections` SMTP sessions, takes each one up to DATA,
and only then has all of them send their message together; then waits until the sink
has every message, since the relay delivers in the background. Meanwhile the resident
memory of the relay's process tree (VmRSS of the process and all its descendants,
summed) is sampled every 50 ms. The same for bench/passthrough.py, aiosmtpd ->
aiosmtplib, for comparison. The target for pixelpost is a peak under 1.5 GB.

A session the system refused (at its greeting, a command or the message) is counted
beside the figures; with any refused, the figures are not those of the load asked for,
the target is INVALID, and the exit status is 1, as it is when the target is MISSED.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.messages import html_message, text_message
from bench.relay import BIN, PASSTHROUGH, ROOT, SETTLE, TRACKED, running, smtp_sink
from bench.smtp_client import Refused, Session, data_payload
from tests.net import free_port
from tests.relay_config import relay_config

SAMPLE_INTERVAL = 0.05
TARGET_MB = 1536
MB = 1024 * 1024
SYSTEMS = {"pixelpost": TRACKED, "passthrough": PASSTHROUGH}
KINDS = {"html": "HTML newsletter", "text": "plain text"}


def tree_pids(root: int) -> list[int]:
    """Process `root` and all its descendants."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                # The parent pid is the second field after the parenthesized name.
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found = []
    pending = [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def tree_rss(root: int) -> int:
    """Bytes resident in process `root` and all its descendants (VmRSS summed)."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # kB
    return total


def kill_tree(root: int) -> None:
    """SIGKILL process `root` and all its descendants."""
    for pid in tree_pids(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Sampler:
    """Samples `tree_rss(pid)` in a thread, keeping the peak. With `limit` (bytes), the
    process tree is killed once it holds more than that: a benchmark must not take a
    shared machine's memory from everyone else."""

    def __init__(self, pid: int, *, limit: int | None = None) -> None:
        self._pid = pid
        self._limit = limit
        self.peak = 0
        self.peak_at = 0.0
        """Seconds from the start of sampling to the peak."""
        self.last = 0
        self.exceeded = threading.Event()
        """Set when the tree passed `limit` and was killed."""
        self._start = time.perf_counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.last = tree_rss(self._pid)
            if self.last > self.peak:
                self.peak, self.peak_at = self.last, time.perf_counter() - self._start
            if self._limit is not None and self.last > self._limit and not self.exceeded.is_set():
                kill_tree(self._pid)
                self.exceeded.set()
            self._done.wait(SAMPLE_INTERVAL)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[Sampler]:
        self._start = time.perf_counter()
        self._thread.start()
        try:
            yield self
        finally:
            self._done.set()
            self._thread.join()


class Gate:
    """Opens once every one of `parties` sessions has reached DATA or failed on the way:
    a refused session neither holds up nor breaks the others (as `asyncio.Barrier`'s
    abort would), so that what the relay refused is counted, session by session."""

    def __init__(self, parties: int) -> None:
        self._waiting = parties
        self._open = asyncio.Event()

    def arrive(self) -> None:
        self._waiting -= 1
        if self._waiting <= 0:
            self._open.set()

    async def wait(self) -> None:
        """Arrive, and wait for the others."""
        self.arrive()
        await self._open.wait()


async def send_one(port: int, number: int, payload: bytes, gate: Gate) -> None:
    """One session up to DATA, then, with all the others, the message."""
    try:
        session = await Session.open(port)
    except BaseException:
        gate.arrive()  # the others do not wait for this one
        raise
    try:
        try:
            await session.command(b"MAIL FROM:<news@example.com>", 250)
            await session.command(f"RCPT TO:<reader{number}@example.org>".encode(), 250)
            await session.command(b"DATA", 354)
        except BaseException:
            gate.arrive()
            raise
        await gate.wait()
        await session.send(payload)
        await session.reply(250)
    finally:
        await session.close()


async def send_all(port: int, connections: int, payload: bytes) -> list[BaseException | None]:
    gate = Gate(connections)
    return await asyncio.gather(
        *(send_one(port, n, payload, gate) for n in range(connections)),
        return_exceptions=True,
    )


def describe(outcome: BaseException) -> str:
    """A refusal as the server's reply; anything else by its type and message."""
    return str(outcome) if isinstance(outcome, Refused) else repr(outcome)


@dataclass(frozen=True)
class Result:
    system: str
    kind: str
    size: int
    connections: int
    idle: int
    peak: int
    peak_at: float
    at_replies: int
    """Resident when the last reply came."""
    replied: float
    delivered: float
    refused: list[str]
    """Why each refused session failed."""

    def verdict(self) -> str:
        """The target's verdict: INVALID when any session was refused."""
        if self.refused:
            return f"INVALID, {len(self.refused)} of {self.connections} sessions refused"
        return "met" if self.peak < TARGET_MB * MB else "MISSED"


def measure(system: str, kind: str, message: bytes, connections: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="pixelpost-memory-") as tmp:
        workdir = Path(tmp)
        sink_port, port = free_port(), free_port()
        if system == TRACKED:
            config = relay_config(
                workdir, port, sink_port, "tracked", max_message_bytes=2 * len(message)
            )
            args = [str(BIN / "pixelpost"), "relay", "-c", str(config)]
        else:
            args = [sys.executable, "-m", "bench.passthrough", str(port), str(sink_port)]
        payload = data_payload(message)
        with (
            smtp_sink(sink_port) as sink,
            running(args, port, ROOT, workdir / "system.log") as process,
        ):
            time.sleep(1)  # settled after its start
            idle = tree_rss(process.pid)
            with Sampler(process.pid).sampling() as sampler:
                start = time.perf_counter()
                outcomes = asyncio.run(send_all(port, connections, payload))
                replied = time.perf_counter() - start
                at_replies = sampler.last
                refused = [describe(outcome) for outcome in outcomes if outcome is not None]
                sink.wait_for(connections - len(refused))
                delivered = time.perf_counter() - start
            time.sleep(SETTLE)
            return Result(
                system=system,
                kind=kind,
                size=len(message),
                connections=connections,
                idle=idle,
                peak=sampler.peak,
                peak_at=sampler.peak_at,
                at_replies=at_replies,
                replied=replied,
                delivered=delivered,
                refused=refused,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100, help="concurrent sessions")
    parser.add_argument("--size", type=int, default=10_000_000, help="bytes of body per message")
    parser.add_argument("--kind", choices=["both", *KINDS], default="both")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    args = parser.parse_args()
    keys = [key.strip() for key in args.systems.split(",") if key.strip()]
    if not keys or any(key not in SYSTEMS for key in keys):
        parser.error(f"--systems: pick from {','.join(SYSTEMS)}")
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    kinds = list(KINDS) if args.kind == "both" else [args.kind]

    results = []
    for kind in kinds:
        message = html_message(args.size) if kind == "html" else text_message(args.size)
        for key in keys:
            result = measure(SYSTEMS[key], kind, message, args.connections)
            print(
                f"{result.system:26} {kind:4}: peak {result.peak / MB:7.1f} MB after"
                f" {result.peak_at:5.1f}s (idle {result.idle / MB:5.1f} MB), all replies after"
                f" {result.replied:5.1f}s ({result.at_replies / MB:.1f} MB then),"
                f" all at the sink after {result.delivered:5.1f}s,"
                f" {len(result.refused)} of {result.connections} sessions refused",
                flush=True,
            )
            for problem, count in collections.Counter(result.refused).most_common():
                print(f"    refused {count} times: {problem}")
            results.append(result)

    print(
        f"\n{args.connections} concurrent SMTP sessions, one message each, sent together;"
        f" resident memory of the system's process tree, sampled every"
        f" {SAMPLE_INTERVAL * 1000:.0f} ms until smtp-sink had them all"
    )
    print(
        f"{'system':26} {'message':>24} {'idle MB':>8} {'peak MB':>8} {'peak s':>7}"
        f" {'replies s':>10} {'MB then':>8} {'delivered s':>12} {'refused':>8}"
    )
    for r in results:
        described = f"{r.size / 1e6:.1f} MB {KINDS[r.kind]}"
        print(
            f"{r.system:26} {described:>24} {r.idle / MB:8.1f} {r.peak / MB:8.1f}"
            f" {r.peak_at:7.1f} {r.replied:10.1f} {r.at_replies / MB:8.1f} {r.delivered:12.1f}"
            f" {len(r.refused):8}"
        )
    failed = False
    for r in results:
        if r.system == TRACKED:
            verdict = r.verdict()
            failed = failed or verdict != "met"
            print(
                f"target: pixelpost peak < 1.5 GB with {KINDS[r.kind]}:"
                f" {verdict} ({r.peak / MB:.0f} MB)"
            )
        elif r.refused:
            failed = True
            print(
                f"baseline: {r.system} with {KINDS[r.kind]}: INVALID,"
                f" {len(r.refused)} of {r.connections} sessions refused"
            )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
