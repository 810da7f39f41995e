"""One message to many recipients: the relay's memory, and its other sessions, meanwhile.

    .venv/bin/python -m bench.fanout [--size 10000000] [--recipients 1000] [--probe-mail]
                                     [--timeout 300] [--memory-limit 6144]

Starts `pixelpost relay` (bench/relay.py's configuration, tracking on, so that each
recipient gets a copy of its own, with its own links; one relay process) relaying to
Debian's `smtp-sink`, and sends it one HTML newsletter of `--size` bytes for
`--recipients` recipients in one SMTP transaction. Meanwhile:

  - the resident memory of the relay's process tree is sampled every 50 ms;
  - a second session on the relay, open from before the message until the sink has
    every copy, sends NOOP every 20 ms, on time even while earlier ones wait for their
    answer, and times each reply from its NOOP's sending (with --probe-mail it also
    sends a small message every second, timed from MAIL to the 250 after its dot).

Reported: the peak; the time from the final dot to the 250, and to the sink having
every copy; the spool's size on disk (du) when the 250 came; the NOOP replies' p50, p99
and maximum; and what was refused (a recipient, the message, a probe's message) or
failed (a session lost, a timeout). Goals: peak under 1 GB, NOOP p99 under 50 ms. With
anything refused or failed, a goal is INVALID unless the run already missed it (a peak
or NOOP waits past the goal); the exit status is 1 unless every goal is met.

`--recipients 1,1000` runs the same message to 1 recipient first, for comparison, one
row each. Runs are bounded: `--timeout` seconds each, and the relay is killed (the run
reported as aborted) once it holds more than `--memory-limit` MB, to spare a shared
machine; 0 lifts the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.memory import MB, SAMPLE_INTERVAL, Sampler, tree_rss
from bench.messages import html_message, text_message
from bench.relay import BIN, ROOT, SETTLE, TRACKED, SinkCounter, running, smtp_sink
from bench.smtp_client import Refused, Session, data_payload
from tests.net import free_port
from tests.relay_config import RECIPIENTS_LIMIT, relay_config

NOOP_INTERVAL = 0.02
PROBE_MAIL_EVERY = 50
"""With --probe-mail, every this many ticks (one second) a small message instead of a
NOOP."""
PROBE_STOP_TIMEOUT = 5.0
"""Seconds the probe gets to finish its last command once the sink has every copy."""
SINK_POLL = 0.02
GOAL_PEAK_MB = 1024
GOAL_P99_MS = 50.0


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path`, as du counts them (allocated blocks)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Outcome:
    """What one run saw, from the clients' side."""

    recipients: int
    accepted: int = 0
    """Recipients the relay took (250 to RCPT), if it took the message."""
    data_seconds: float = math.nan
    """From the first byte of the message to its final dot handed to the connection."""
    replied: float = math.nan
    """From the final dot to the 250."""
    delivered: float = math.nan
    """From the final dot until the sink had every copy."""
    spool_bytes: int | None = None
    noops: list[float] = field(default_factory=list)
    """Seconds each NOOP took to be answered."""
    unanswered: list[float] = field(default_factory=list)
    """Seconds each NOOP still unanswered at the end (the relay killed, the session
    lost) had waited: the least its answer would have taken."""
    probe_mails: list[float] = field(default_factory=list)
    """Seconds each probe message took, MAIL to the 250 after its dot."""
    probe_accepted: int = 0
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Probe:
    """The other session: a NOOP every 20 ms, sent on time whether or not the previous
    ones were answered (commands queue up in the connection, as any client's do while
    the relay is busy), so that a stall of a second delays 50 NOOPs rather than one,
    and each reply timed from its NOOP's sending. With `mail`, every second a small
    message instead, once every NOOP before it is answered, timed from MAIL to the 250
    after its dot."""

    def __init__(self, session: Session, outcome: Outcome, *, mail: bytes | None) -> None:
        self._session = session
        self._outcome = outcome
        self._mail = mail
        self._sent: collections.deque[float] = collections.deque()
        """When each unanswered NOOP was sent."""
        self._more = asyncio.Event()
        """Set when a NOOP is sent."""
        self._answered = asyncio.Event()
        """Set while no NOOP is unanswered."""
        self._answered.set()

    async def run(self, stop: asyncio.Event) -> None:
        reading = asyncio.create_task(self._read())
        try:
            await self._tick(stop, reading)
            await self._drained(reading)
        except (Refused, OSError, TimeoutError) as exc:
            self._outcome.failed.append(f"the probe session: {exc!r}")
        finally:
            now = time.perf_counter()
            self._outcome.unanswered.extend(now - sent for sent in self._sent)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _tick(self, stop: asyncio.Event, reading: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        number = 0
        while not stop.is_set() and not reading.done():
            number += 1
            if self._mail is not None and number % PROBE_MAIL_EVERY == 0:
                await self._drained(reading)
                await self._send(self._mail)
            else:
                self._answered.clear()
                self._sent.append(time.perf_counter())
                self._session.write(b"NOOP")
                self._more.set()
            # No burst to catch up after a probe message.
            tick = max(tick + NOOP_INTERVAL, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick - loop.time())
        if reading.done():
            reading.result()  # its error

    async def _read(self) -> None:
        while True:
            if not self._sent:
                self._answered.set()
                self._more.clear()
                await self._more.wait()
                continue
            await self._session.reply(250)
            self._outcome.noops.append(time.perf_counter() - self._sent.popleft())

    async def _drained(self, reading: asyncio.Task[None]) -> None:
        """Until every NOOP sent is answered, or the reading failed (its error)."""
        answered = asyncio.create_task(self._answered.wait())
        either: set[asyncio.Task[Any]] = {answered, reading}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        if reading.done():
            reading.result()

    async def _send(self, mail: bytes) -> None:
        started = time.perf_counter()
        try:
            await self._session.command(b"MAIL FROM:<probe@example.com>", 250)
            await self._session.command(b"RCPT TO:<probe@example.org>", 250)
            await self._session.command(b"DATA", 354)
            await self._session.send(mail)
            await self._session.reply(250)
        except Refused as exc:
            self._outcome.refused.append(f"a probe message: {exc}")
            await self._session.command(b"RSET", 250)
            return
        self._outcome.probe_mails.append(time.perf_counter() - started)
        self._outcome.probe_accepted += 1


async def send_message(port: int, payload: bytes, spool: Path, outcome: Outcome) -> float:
    """The message to `outcome.recipients` recipients in one transaction; the
    perf_counter of its final dot."""
    session = await Session.open(port)
    try:
        await session.command(b"MAIL FROM:<news@example.com>", 250)
        accepted = 0
        for number in range(outcome.recipients):
            try:
                await session.command(f"RCPT TO:<reader{number}@example.org>".encode(), 250)
                accepted += 1
            except Refused as exc:
                outcome.refused.append(f"RCPT: {exc}")
        if not accepted:
            raise Refused("every recipient refused")
        await session.command(b"DATA", 354)
        started = time.perf_counter()
        await session.send(payload)
        dot = time.perf_counter()
        outcome.data_seconds = dot - started
        await session.reply(250)
        outcome.replied = time.perf_counter() - dot
        outcome.accepted = accepted
        outcome.spool_bytes = await asyncio.to_thread(disk_usage, spool)
        return dot
    finally:
        await session.close()


async def until_delivered(
    sink: SinkCounter, expected: int, outcome: Outcome, killed: threading.Event
) -> bool:
    """Until the sink has counted `expected` messages, and the probe's; False if the
    relay was killed meanwhile."""
    while sink.count < expected + outcome.probe_accepted:
        if killed.is_set():
            return False
        await asyncio.sleep(SINK_POLL)
    return True


async def scenario(
    port: int,
    payload: bytes,
    spool: Path,
    sink: SinkCounter,
    outcome: Outcome,
    *,
    killed: threading.Event,
    probe_mail: bytes | None,
    time_limit: float,
) -> None:
    """The other session opens, the message goes, and both run until the sink has
    every copy, `time_limit` seconds at most; everything seen goes into `outcome`."""
    before = sink.count
    try:
        probe_session = await Session.open(port)
    except (Refused, OSError) as exc:
        outcome.failed.append(f"the probe session: {exc!r}")
        return
    stop = asyncio.Event()
    probing = asyncio.create_task(Probe(probe_session, outcome, mail=probe_mail).run(stop))
    try:
        async with asyncio.timeout(time_limit):
            try:
                dot = await send_message(port, payload, spool, outcome)
            except Refused as exc:
                # Once the relay is killed, a connection closed is its end, not a refusal.
                found = outcome.failed if killed.is_set() else outcome.refused
                found.append(f"the message: {exc}")
                return
            except OSError as exc:
                outcome.failed.append(f"the message: {exc!r}")
                return
            if await until_delivered(sink, before + outcome.accepted, outcome, killed):
                outcome.delivered = time.perf_counter() - dot
            else:
                outcome.failed.append("the relay was killed before the sink had every copy")
    except TimeoutError:
        outcome.failed.append(f"not done after {time_limit:.0f}s")
    finally:
        stop.set()
        try:
            await asyncio.wait_for(probing, PROBE_STOP_TIMEOUT)
        except TimeoutError:
            outcome.failed.append(
                f"the probe's last command unanswered {PROBE_STOP_TIMEOUT:.0f}s after the end"
            )
        await probe_session.close()


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    size: int
    idle: int
    peak: int
    peak_at: float
    """Seconds from the start of the run to the peak."""
    aborted: bool
    """The relay passed --memory-limit and was killed."""

    @property
    def valid(self) -> bool:
        return not (self.outcome.refused or self.outcome.failed or self.aborted)

    def verdicts(self, limit_mb: int) -> list[tuple[str, bool]]:
        """Each goal's line, and whether it is met. A run cut short by the memory
        limit, or with long NOOPs already (those unanswered at the end counted with the
        wait they had), misses its goal for certain; with anything else refused or
        failed, a goal is INVALID."""
        peak_mb = self.peak / MB
        if self.aborted and peak_mb >= GOAL_PEAK_MB:
            peak = f"MISSED ({peak_mb:.0f} MB, killed above the limit of {limit_mb} MB)"
        elif not self.valid:
            peak = f"INVALID ({peak_mb:.0f} MB, {self.problems()})"
        else:
            peak = f"{'met' if peak_mb < GOAL_PEAK_MB else 'MISSED'} ({peak_mb:.0f} MB)"
        p99 = percentile(self.outcome.noops, 0.99) * 1000
        at_least = percentile(self.outcome.noops + self.outcome.unanswered, 0.99) * 1000
        if self.valid:
            latency = f"{'met' if p99 < GOAL_P99_MS else 'MISSED'} ({p99:.1f} ms)"
        elif at_least >= GOAL_P99_MS:
            latency = f"MISSED (at least {at_least:.1f} ms, {self.problems()})"
        else:
            latency = f"INVALID ({p99:.1f} ms, {self.problems()})"
        recipients = self.outcome.recipients
        return [
            (
                f"goal: peak resident memory < 1 GB with {recipients} recipients: {peak}",
                peak.startswith("met"),
            ),
            (
                f"goal: the other session's NOOP p99 < {GOAL_P99_MS:.0f} ms with"
                f" {recipients} recipients: {latency}",
                latency.startswith("met"),
            ),
        ]

    def problems(self) -> str:
        found = len(self.outcome.refused) + len(self.outcome.failed)
        return f"{found} refused or failed" + (", aborted" if self.aborted else "")


def measure(message: bytes, recipients: int, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="pixelpost-fanout-") as tmp:
        workdir = Path(tmp)
        needed = len(message) * recipients * 1.2
        free = shutil.disk_usage(workdir).free
        if free < needed:
            raise SystemExit(
                f"{recipients} copies of {len(message) / 1e6:.1f} MB need about"
                f" {needed / 1e9:.1f} GB in {workdir.parent}, {free / 1e9:.1f} GB free"
            )
        sink_port, port = free_port(), free_port()
        config = relay_config(
            workdir,
            port,
            sink_port,
            "tracked",
            max_recipients=max(recipients, RECIPIENTS_LIMIT),
            max_message_bytes=2 * len(message),
        )
        args_ = [str(BIN / "pixelpost"), "relay", "-c", str(config)]
        probe_mail = data_payload(text_message(2_000)) if args.probe_mail else None
        outcome = Outcome(recipients=recipients)
        with (
            smtp_sink(sink_port) as sink,
            running(args_, port, ROOT, workdir / "relay.log") as process,
        ):
            time.sleep(1)  # settled after its start
            idle = tree_rss(process.pid)
            limit = args.memory_limit * MB if args.memory_limit else None
            with Sampler(process.pid, limit=limit).sampling() as sampler:
                asyncio.run(
                    scenario(
                        port,
                        data_payload(message),
                        workdir / "spool",
                        sink,
                        outcome,
                        killed=sampler.exceeded,
                        probe_mail=probe_mail,
                        time_limit=args.timeout,
                    )
                )
            if not sampler.exceeded.is_set():
                time.sleep(SETTLE)
        return Result(
            outcome=outcome,
            size=len(message),
            idle=idle,
            peak=sampler.peak,
            peak_at=sampler.peak_at,
            aborted=sampler.exceeded.is_set(),
        )


def _ms(values: list[float], fraction: float | None = None) -> str:
    if not values:
        return "-"
    seconds = max(values) if fraction is None else percentile(values, fraction)
    return f"{seconds * 1000:.1f}"


def _s(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.2f}"


def report(results: list[Result], args: argparse.Namespace) -> None:
    size = results[0].size
    print(
        f"\none {size / 1e6:.1f} MB HTML newsletter to N recipients in one transaction,"
        f" tracking on (a copy each), one relay process; resident memory of its process tree"
        f" sampled every {SAMPLE_INTERVAL * 1000:.0f} ms, a second session's NOOP every"
        f" {NOOP_INTERVAL * 1000:.0f} ms, until smtp-sink had every copy;"
        " seconds from the final dot"
    )
    print(
        f"{'system':24} {'N':>5} {'idle MB':>8} {'peak MB':>8} {'250 s':>7} {'sink s':>7}"
        f" {'spool MB':>9} {'NOOPs':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8}"
        f" {'refused':>8} {'failed':>7}"
    )
    for r in results:
        o = r.outcome
        spool = "-" if o.spool_bytes is None else f"{o.spool_bytes / MB:.1f}"
        peak = f"{'>' if r.aborted else ''}{r.peak / MB:.1f}"
        print(
            f"{TRACKED:24} {o.recipients:5} {r.idle / MB:8.1f} {peak:>8} {_s(o.replied):>7}"
            f" {_s(o.delivered):>7} {spool:>9} {len(o.noops):6} {_ms(o.noops, 0.5):>7}"
            f" {_ms(o.noops, 0.99):>7} {_ms(o.noops):>8} {len(o.refused):8} {len(o.failed):7}"
        )
    if args.probe_mail:
        for r in results:
            o = r.outcome
            print(
                f"probe messages with {o.recipients} recipients: {len(o.probe_mails)} accepted,"
                f" MAIL to 250 p50 {_ms(o.probe_mails, 0.5)} ms, max {_ms(o.probe_mails)} ms"
            )


def parse_recipients(value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: numbers, comma-separated") from None
    if not counts or min(counts) < 1 or max(counts) > 100_000:
        raise argparse.ArgumentTypeError(f"{value}: each from 1 to 100000")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="bytes of HTML")
    parser.add_argument(
        "--recipients",
        type=parse_recipients,
        default=[1000],
        help="recipients of the message; comma-separated for one run each (1,1000)",
    )
    parser.add_argument(
        "--probe-mail", action="store_true", help="the other session also sends a message a second"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument(
        "--memory-limit",
        type=int,
        default=6144,
        help="MB the relay may hold before it is killed (0: no limit)",
    )
    args = parser.parse_args()
    message = html_message(args.size)
    results = []
    for recipients in args.recipients:
        result = measure(message, recipients, args)
        o = result.outcome
        said = [
            f"{recipients} recipients: peak {result.peak / MB:.1f} MB after {result.peak_at:.1f}s"
            + (" (then killed: over the limit)" if result.aborted else ""),
            "" if math.isnan(o.data_seconds) else f"sent in {o.data_seconds:.2f}s",
            "no 250" if math.isnan(o.replied) else f"250 after {o.replied:.2f}s",
            "not all at the sink"
            if math.isnan(o.delivered)
            else f"all at the sink after {o.delivered:.2f}s",
            f"NOOP p99 {_ms(o.noops, 0.99)} ms of {len(o.noops)}"
            + (f" ({len(o.unanswered)} unanswered at the end)" if o.unanswered else ""),
            f"{len(o.refused)} refused, {len(o.failed)} failed",
        ]
        print(", ".join(part for part in said if part), flush=True)
        for problem, count in collections.Counter(o.refused + o.failed).most_common():
            print(f"    {problem}" + (f" ({count} times)" if count > 1 else ""))
        results.append(result)
    report(results, args)
    verdicts = [verdict for result in results for verdict in result.verdicts(args.memory_limit)]
    for line, _ in verdicts:
        print(line)
    if not all(met for _, met in verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()
