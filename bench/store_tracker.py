"""Tracker pixels per second and p99 on PostgreSQL against SQLite, with one and two
tracker processes, side by side in one run.

    .venv/bin/python -m bench.store_tracker [--duration 8] [--connections 50] [--rounds 3]
                                            [--workers 1,2] [--warmup 2] [--copies 10000]

`pixelpost tracker` as bench/tracker.py configures it (its dispatcher process writing
every event to a file destination), once per store and `tracker.workers`: SQLite in a
temporary folder, and PostgreSQL in a throwaway database on the machine's server
(bench/stores.py), each system a store of its own holding `--copies` copies. `wrk -t1`
requests their pixels (/o) in turn, at 50 connections from 127.0.0.1 (the tracker's
connection limits above the load): a warm-up, which gives further tracker processes the
time to start, then the timed run. (bench/tracker.py requests one copy's pixel:
`--copies 1` does the same.) With `--vacuum`, each PostgreSQL store is vacuumed before
each run, as autovacuum would do now and then (the machine's server may have it off).
Each system is started afresh in each round; the rounds run the systems in turn, in
the reverse order every other round. The report gives the median requests per second
and p99 of the rounds, and PostgreSQL's over SQLite's for each number of workers, of
the medians and round by round.

Only answers that are recorded hits count: requests wrk saw fail (an error status, a
connection refused, reset or timed out), and a store holding fewer opens than its
trackers gave answers (warm-ups included, counted once the trackers have stopped), make
the run INVALID, with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.relay import ROOT, running
from bench.stores import admin, count, database_url, sqlite_url, throwaway_database_sync
from bench.tracker import BIN, HITS_SQL, Run, codec, copy_ids, paths_script, prepare, wrk
from tests.net import free_port

SQLITE = "SQLite"
POSTGRESQL = "PostgreSQL"


@dataclass(kw_only=True)
class System:
    """One tracker configuration: its store and processes, and what it did."""

    store: str
    workers: int
    url: str
    port: int
    config: Path
    script: Path
    """wrk's script, requesting every copy's pixel in turn."""
    runs: list[Run] = field(default_factory=list)
    answered: int = 0
    """Answers, warm-ups included: each must be a recorded hit."""
    recorded: int = 0

    @property
    def label(self) -> str:
        return f"{self.store}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def rate(self) -> float:
        return statistics.median(run.rate for run in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(run.p99 for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


def make_systems(
    workdir: Path, workers: list[int], copies: int, stack: contextlib.ExitStack
) -> list[System]:
    """SQLite and PostgreSQL for each number of workers, configured and with the
    benchmark's copies recorded."""
    systems = []
    for count_of_workers in workers:
        for store in (SQLITE, POSTGRESQL):
            folder = workdir / f"{store.lower()}-{count_of_workers}"
            folder.mkdir()
            if store == POSTGRESQL:
                url = database_url(stack.enter_context(throwaway_database_sync("bench_tracker")))
            else:
                url = sqlite_url(folder / "pixelpost.db")
            port = free_port()
            config, _ = prepare(
                folder, port, store_url=url, workers=count_of_workers, copies=copies
            )
            tokens = codec(folder)
            pixels = [f"/o/{tokens.open_token(message_id)}" for message_id in copy_ids(copies)]
            systems.append(
                System(
                    store=store,
                    workers=count_of_workers,
                    url=url,
                    port=port,
                    config=config,
                    script=paths_script(folder, "pixels", pixels),
                )
            )
    return systems


def measure(system: System, args: argparse.Namespace, round_number: int) -> None:
    if args.vacuum and system.store == POSTGRESQL:
        asyncio.run(admin("VACUUM", system.url))
    command = [
        str(BIN / "pixelpost"),
        "--log-level",
        "warning",
        "tracker",
        "-c",
        str(system.config),
    ]
    url = f"http://127.0.0.1:{system.port}/"
    script = system.script
    with running(command, system.port, ROOT, system.config.parent / "tracker.log"):
        warmup = wrk(url, duration=args.warmup, connections=args.connections, script=script)
        run = wrk(url, duration=args.duration, connections=args.connections, script=script)
    system.answered += warmup.answered + run.answered
    system.runs.append(Run(run.rate, run.p99, run.answered, run.errors + warmup.errors))
    print(
        f"round {round_number + 1}: {system.label:24} {run.rate:8.0f} req/s  "
        f"p99 {run.p99 * 1000:7.2f} ms  errors {run.errors + warmup.errors}",
        flush=True,
    )


def report(systems: list[System], args: argparse.Namespace) -> list[str]:
    """Print the table and the ratios; what makes the run INVALID."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    print(
        f"\n/o of {args.copies:,} copies in turn at {args.connections} connections, "
        f"{args.duration}s per run after a "
        f"{args.warmup}s warm-up, {args.rounds} rounds, {os.cpu_count()} cores, "
        f"PostgreSQL stores {'vacuumed before each run' if args.vacuum else 'never vacuumed'}; "
        f"load average at the end {load}"
    )
    print(f"{'':24} {'req/s':>8} {'p99':>9} {'errors':>7} {'answered':>10} {'recorded':>10}")
    for system in systems:
        print(
            f"{system.label:24} {system.rate:8.0f} {system.p99 * 1000:7.2f}ms "
            f"{system.errors:7} {system.answered:10,} {system.recorded:10,}"
        )
    print()
    for workers in args.workers:
        sqlite, postgresql = (
            next(s for s in systems if s.workers == workers and s.store == store)
            for store in (SQLITE, POSTGRESQL)
        )
        rounds = " ".join(
            f"{pg.rate / lite.rate:.2f}x"
            for pg, lite in zip(postgresql.runs, sqlite.runs, strict=True)
        )
        print(
            f"PostgreSQL / SQLite, {workers} worker{'s' if workers > 1 else ''}: "
            f"req/s {postgresql.rate / sqlite.rate:.2f}x, p99 {postgresql.p99 / sqlite.p99:.2f}x; "
            f"req/s round by round: {rounds}"
        )
    problems = []
    for system in systems:
        if system.errors:
            problems.append(f"{system.label}: {system.errors:,} requests failed")
        if system.recorded < system.answered:
            problems.append(
                f"{system.label}: {system.answered:,} answers but {system.recorded:,} hits recorded"
            )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="VACUUM each PostgreSQL store before each run (the server may run no autovacuum)",
    )
    parser.add_argument(
        "--copies", type=int, default=10_000, help="copies whose pixels wrk requests in turn"
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="tracker.workers to measure, comma-separated",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt install wrk")
    with (
        tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        systems = make_systems(Path(tmp), args.workers, args.copies, stack)
        for round_number in range(args.rounds):
            for system in systems if round_number % 2 == 0 else systems[::-1]:
                measure(system, args, round_number)
        for system in systems:
            system.recorded = asyncio.run(count(system.url, HITS_SQL))
        problems = report(systems, args)
    if problems:
        print("INVALID: " + "; ".join(problems))
        sys.exit(1)
    print("every request answered, and each answer a hit recorded in its store")


if __name__ == "__main__":
    main()
