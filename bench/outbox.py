"""Outbox throughput: events per second delivered to a webhook by 1, 2 and 4
`pixelpost dispatch` processes sharing one PostgreSQL store, side by side in one run.

    .venv/bin/python -m bench.outbox [--events 20000] [--dispatchers 1,2,4] [--rounds 2]

A store is filled once, in a throwaway database on the machine's PostgreSQL
(bench/stores.py), with `--events` events recorded through the store's own writer as
bench/stats.py records them (copies in 3 configuration sets with their Send, Delivery
or Bounce, opens and clicks), and rolled up, so that the dispatchers' roll-up finds
nothing to do and the runs measure the outbox alone. Every run gets a copy of that
database (CREATE DATABASE … TEMPLATE: every event still to route) and starts N
`pixelpost dispatch` processes on it, with every configuration set's events going to
one webhook destination: a receiver in this process (aiohttp on loopback, answering 200
at once, as tests/receiver.py does without keeping the requests) that counts each
request's `webhook-id`. The clock runs from starting the dispatchers (their start-up,
routing and delivery) until the receiver has every event id of the store at least once.
The rounds run the dispatcher counts in turn, in the reverse order every other round.
The report gives the median events per second, the events received more than once, the
ratio to one dispatcher, and the CPU the machine spent meanwhile.

An event id missing at the end (nothing new for `--stall` seconds), or one received
that the store does not hold, makes the run INVALID, with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiohttp import web

from bench.relay import BIN, ROOT, STOP_TIMEOUT
from bench.stats import CONFIG_SETS, catch_up, fill
from bench.stores import (
    admin,
    create_database,
    database_url,
    drop_database,
    open_url,
    throwaway_database,
)
from pixelpost.store.postgresql.outbox import ROUTE_BATCH

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STALL = 60.0
"""Give up when no new event id has come for this long."""


class Receiver:
    """Counts the `webhook-id` of every request; `done` once it has every id."""

    def __init__(self, expected: int) -> None:
        self.ids: Counter[str] = Counter()
        self.expected = expected
        self.done = asyncio.Event()
        self.changed = asyncio.Event()
        self.first: float | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        event_id = request.headers["webhook-id"]
        if self.first is None:
            self.first = time.perf_counter()
        self.ids[event_id] += 1
        if self.ids[event_id] == 1:
            self.changed.set()
            if len(self.ids) >= self.expected:
                self.done.set()
        return web.Response()

    async def wait(self, stall: float) -> bool:
        """Until every id has come (True), or none new for `stall` seconds (False)."""
        while not self.done.is_set():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), stall)
            except TimeoutError:
                return self.done.is_set()
        return True


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[int]:
    """The receiver on a loopback port: yields the port."""
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def config_text(url: str, port: int, workdir: Path) -> str:
    sets = "".join(f'[config_sets.{name}]\ndestinations = ["hook"]\n' for name in CONFIG_SETS)
    return f"""
[store]
url = "{url}"
[signing]
key_file = "{workdir / "signing.key"}"
{sets}
[destinations.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/events"
secret = "{SECRET}"
"""


async def stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM to all, then wait for each; killed if it takes too long."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            print(f"warning: pixelpost dispatch (pid {process.pid}) killed", file=sys.stderr)
            process.kill()
            await process.wait()


def machine_busy() -> tuple[float, float]:
    """Seconds of CPU the machine has spent busy and in all, over its cores (/proc/stat)."""
    fields = [float(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


@dataclass(kw_only=True)
class Run:
    seconds: float
    first: float
    """Seconds from the start to the first request."""
    received: int
    distinct: int
    duplicates: int
    unknown: int
    missing: int
    machine_busy: float
    """The share of the machine's CPU busy meanwhile (all cores, all processes)."""
    dispatchers_cpu: float
    """Seconds of CPU of the dispatcher processes."""
    receiver_cpu: float
    """Seconds of CPU of this process (the receiver)."""


@dataclass(kw_only=True)
class Results:
    events: int = 0
    filled: float = 0.0
    rolled_up: float = 0.0
    runs: dict[int, list[Run]] = field(default_factory=dict)


async def prepare(template: str, events: int, results: Results) -> set[str]:
    """Fill the template store; the ids of its events."""
    url = database_url(template)
    store = await open_url(url)
    try:
        results.filled, _ = await fill(store, events, time.time())
        print("rolling up ...", flush=True)
        _, results.rolled_up = await catch_up(store)
    finally:
        await store.close()
    connection = await asyncpg.connect(url)
    try:
        ids = {row[0] for row in await connection.fetch("SELECT id FROM events")}
    finally:
        await connection.close()
    # Nobody connects to it any more (autovacuum neither): every run starts from the
    # same copy.
    await admin(f"ALTER DATABASE {template} WITH ALLOW_CONNECTIONS false")
    return ids


async def run_once(
    template: str, dispatchers: int, expected: set[str], workdir: Path, stall: float
) -> Run:
    name = await create_database("bench_outbox_run", template=template)
    try:
        receiver = Receiver(len(expected))
        async with receiving(receiver) as port:
            config = workdir / f"dispatch-{dispatchers}.toml"
            config.write_text(config_text(database_url(name), port, workdir))
            command = [
                str(BIN / "pixelpost"),
                "--log-level",
                "warning",
                "dispatch",
                "-c",
                str(config),
            ]
            log = (workdir / f"dispatch-{dispatchers}.log").open("ab")
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            own_before = time.process_time()
            busy_before, all_before = machine_busy()
            started = time.perf_counter()
            processes = [
                await asyncio.create_subprocess_exec(
                    *command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
                )
                for _ in range(dispatchers)
            ]
            try:
                await receiver.wait(stall)
                seconds = time.perf_counter() - started
                busy_after, all_after = machine_busy()
                own = time.process_time() - own_before
            finally:
                await stop_all(processes)
                log.close()
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        await drop_database(name)
    ids = set(receiver.ids)
    if ids != expected and (tail := (workdir / f"dispatch-{dispatchers}.log").read_text()):
        print(f"--- the end of the dispatchers' log:\n{tail[-3000:]}---", file=sys.stderr)
    return Run(
        seconds=seconds,
        first=(receiver.first or started) - started,
        received=sum(receiver.ids.values()),
        distinct=len(ids),
        duplicates=sum(n - 1 for n in receiver.ids.values()),
        unknown=len(ids - expected),
        missing=len(expected - ids),
        machine_busy=(busy_after - busy_before) / (all_after - all_before),
        dispatchers_cpu=(children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        receiver_cpu=own,
    )


def report(results: Results, args: argparse.Namespace) -> list[str]:
    """Print the table and the ratios; what makes the run INVALID."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    print(
        f"\n{results.events:,} events in one PostgreSQL store, recorded in "
        f"{results.filled:.1f}s and rolled up in {results.rolled_up:.1f}s beforehand; "
        f"{args.rounds} rounds, {os.cpu_count()} cores, a webhook on loopback (routing "
        f"batches of {ROUTE_BATCH}); load average at the end {load}"
    )
    base = args.dispatchers[0]
    print(
        f"{'dispatchers':>11} {'events/s':>9} {'min':>7} {'max':>7} {f'vs {base}':>6} "
        f"{'first':>6} {'dupl.*':>6} {'machine CPU':>12} {'dispatch CPU s':>15} "
        f"{'receiver CPU s':>15}"
    )

    def rate(run: Run) -> float:
        return results.events / run.seconds

    baseline = statistics.median(rate(r) for r in results.runs[base])
    problems = []
    for dispatchers, runs in results.runs.items():
        rates = [rate(r) for r in runs]
        median = statistics.median(rates)
        print(
            f"{dispatchers:>11} {median:9.0f} {min(rates):7.0f} {max(rates):7.0f} "
            f"{median / baseline:5.2f}x {statistics.median(r.first for r in runs):5.1f}s "
            f"{sum(r.duplicates for r in runs):6} "
            f"{statistics.median(r.machine_busy for r in runs):11.0%} "
            f"{statistics.median(r.dispatchers_cpu for r in runs):15.1f} "
            f"{statistics.median(r.receiver_cpu for r in runs):15.1f}"
        )
        for number, run in enumerate(runs, 1):
            what = f"{dispatchers} dispatchers, round {number}"
            if run.missing:
                problems.append(f"{what}: {run.missing:,} events never came")
            if run.unknown:
                problems.append(f"{what}: {run.unknown:,} ids that the store does not hold")
    rounds = "; ".join(
        f"{n}: "
        + " ".join(
            f"{rate(r) / rate(b):.2f}x" for r, b in zip(runs, results.runs[base], strict=True)
        )
        for n, runs in results.runs.items()
        if n != base
    )
    print("* events received more than once, all rounds together")
    print(f"against {base} dispatcher(s) in the same round: {rounds}")
    return problems


async def measure(args: argparse.Namespace) -> tuple[Results, list[str]]:
    results = Results(events=args.events)
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        async with throwaway_database("bench_outbox_template") as template:
            expected = await prepare(template, args.events, results)
            if len(expected) != args.events:
                return results, [f"the store holds {len(expected):,} events, not {args.events:,}"]
            for round_number in range(args.rounds):
                order = args.dispatchers if round_number % 2 == 0 else args.dispatchers[::-1]
                for dispatchers in order:
                    run = await run_once(template, dispatchers, expected, Path(tmp), args.stall)
                    results.runs.setdefault(dispatchers, []).append(run)
                    print(
                        f"round {round_number + 1}: {dispatchers} dispatcher(s): "
                        f"{run.distinct:,} of {len(expected):,} events in {run.seconds:.1f}s "
                        f"({args.events / run.seconds:,.0f}/s, first after {run.first:.1f}s), "
                        f"{run.duplicates} received more than once",
                        flush=True,
                    )
    results.runs = dict(sorted(results.runs.items()))
    return results, report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--dispatchers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="numbers of dispatcher processes, comma-separated; the first is the baseline",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--stall", type=float, default=STALL, help="seconds without a new event id to give up"
    )
    args = parser.parse_args()
    results, problems = asyncio.run(measure(args))
    if problems:
        print("INVALID: " + "; ".join(problems))
        sys.exit(1)
    print(f"every one of the {results.events:,} events reached the receiver")


if __name__ == "__main__":
    main()
