"""Peak memory of the relay while 100 clients send it a 10 MB message each at once.

    .venv/bin/python -m bench.memory [--connections 100] [--size 10000000]
                                     [--kind both|html|text] [--systems pixelpost,passthrough]

Starts `pixelpost relay` (the configuration of bench/relay.py, tracking on) relaying to
Debian's `smtp-sink`, opens `--connections` SMTP sessions, takes each one up to DATA,
and only then has all of them send their message together; then waits until the sink
has every message, since the relay delivers in the background. Meanwhile the resident
memory of the relay's process tree (VmRSS of the process and all its descendants,
summed) is sampled every 50 ms. The same for bench/passthrough.py, aiosmtpd ->
aiosmtplib, for comparison. The target for pixelpost is a peak under 1.5 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.messages import html_message, text_message
from bench.relay import (
    BIN,
    PASSTHROUGH,
    ROOT,
    SETTLE,
    TRACKED,
    free_port,
    pixelpost_config,
    running,
    smtp_sink,
)

SAMPLE_INTERVAL = 0.05
REPLY_TIMEOUT = 600.0
TARGET_MB = 1536
MB = 1024 * 1024
SYSTEMS = {"pixelpost": TRACKED, "passthrough": PASSTHROUGH}
KINDS = {"html": "HTML newsletter", "text": "plain text"}


def tree_rss(root: int) -> int:
    """Bytes resident in process `root` and all its descendants (VmRSS summed)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                # The parent pid is the second field after the parenthesized name.
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    total = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, ()))
        with contextlib.suppress(OSError):
            for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # kB
    return total


class Sampler:
    """Samples `tree_rss(pid)` in a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self.peak_at = 0.0
        """Seconds from the start of sampling to the peak."""
        self.last = 0
        self._start = time.perf_counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.last = tree_rss(self._pid)
            if self.last > self.peak:
                self.peak, self.peak_at = self.last, time.perf_counter() - self._start
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


def data_payload(message: bytes) -> bytes:
    """The message as sent after DATA: CRLF lines, dot-stuffed, with the final dot."""
    lines = re.sub(rb"\r?\n", b"\r\n", message)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", lines) + b".\r\n"


async def reply(reader: asyncio.StreamReader, expected: int) -> None:
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise ConnectionError(f"connection closed, expecting {expected}")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != expected:
        raise ConnectionError(line.decode(errors="replace").strip())


async def send_one(port: int, number: int, payload: bytes, barrier: asyncio.Barrier) -> None:
    """One session up to DATA, then, with all the others, the message."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            await reply(reader, 220)
            for command, expected in (
                (b"EHLO client.bench", 250),
                (b"MAIL FROM:<news@example.com>", 250),
                (f"RCPT TO:<reader{number}@example.org>".encode(), 250),
                (b"DATA", 354),
            ):
                writer.write(command + b"\r\n")
                await reply(reader, expected)
        except BaseException:
            await barrier.abort()  # the others do not wait for this one
            raise
        await barrier.wait()
        writer.write(payload)
        await writer.drain()
        await reply(reader, 250)
        writer.write(b"QUIT\r\n")
        await reply(reader, 221)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send_all(port: int, connections: int, payload: bytes) -> list[BaseException | None]:
    barrier = asyncio.Barrier(connections)
    return await asyncio.gather(
        *(send_one(port, n, payload, barrier) for n in range(connections)),
        return_exceptions=True,
    )


@dataclass(frozen=True)
class Result:
    system: str
    kind: str
    size: int
    idle: int
    peak: int
    peak_at: float
    at_replies: int
    """Resident when the last reply came."""
    replied: float
    delivered: float
    refused: list[str]


def measure(system: str, kind: str, message: bytes, connections: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="pixelpost-memory-") as tmp:
        workdir = Path(tmp)
        sink_port, port = free_port(), free_port()
        if system == TRACKED:
            config = pixelpost_config(workdir, port, sink_port, "tracked")
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
                refused = [repr(outcome) for outcome in outcomes if outcome is not None]
                sink.wait_for(connections - len(refused))
                delivered = time.perf_counter() - start
            time.sleep(SETTLE)
            return Result(
                system=system,
                kind=kind,
                size=len(message),
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
                f" all at the sink after {result.delivered:5.1f}s",
                flush=True,
            )
            for problem in result.refused:
                print(f"    refused: {problem}")
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
    for r in results:
        if r.system == TRACKED:
            verdict = "met" if r.peak < TARGET_MB * MB else "MISSED"
            print(
                f"target: pixelpost peak < 1.5 GB with {KINDS[r.kind]}:"
                f" {verdict} ({r.peak / MB:.0f} MB)"
            )


if __name__ == "__main__":
    main()
