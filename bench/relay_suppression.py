"""The relay's throughput with a million addresses on the suppression list, side by side
with an empty list, in one run.

    .venv/bin/python -m bench.relay_suppression [--addresses 1000000] [--messages 2000]
                                                [--sessions 20] [--rounds 8] [--workers N]

Two `pixelpost relay`s configured alike (bench/relay.py's configuration, tracking on,
`relay.workers` one per core unless `--workers`), each with a store of its own: one
whose suppression list is empty, one with `--addresses` addresses on it, listed
beforehand through the store's own `suppress` (bench/suppression.py's `fill`). Postfix's
`smtp-source` sends bench/relay.py's 20 KB plain text, one recipient each, to each relay
in turn, relaying to `smtp-sink`. The recipient is on neither list, so every message is
delivered, after its lookup (the relay looks up a message's recipients before each
delivery attempt), and each round is timed until `smtp-sink` has counted every message,
as bench/relay.py times it. smtp-source stops at the first refusal, and the benchmark
with it (INVALID, exit status 1). Each relay is started afresh for each round and warmed
up with a few messages; rounds alternate the two, in the opposite order every other
round. Beside the messages per second, the CPU time of each relay's processes over its
timed run, per message: a shared machine's other work moves it much less. Goal (issue
17): with the list, at least 0.95x the messages per second without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.messages import text_message
from bench.relay import BIN, smtp_sink
from bench.relays_side_by_side import Relay, run_rounds
from bench.suppression import fill
from pixelpost.store import SQLiteStore
from tests.net import free_port
from tests.relay_config import relay_config

GOAL = 0.95
"""With the list, at least this many times the messages per second without."""
EMPTY = "empty"


async def listed(database: Path, count: int) -> None:
    """A store at `database` with `count` addresses on its suppression list."""
    store = await SQLiteStore.open(database)
    try:
        if count:
            took = await fill(store, count)
            print(f"listed in {took:.1f} s ({count / took:,.0f} addresses/s)", flush=True)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=2000, help="messages per relay per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="pixelpost's relay.workers (default: one per core, as in bench/relay.py)",
    )
    args = parser.parse_args()
    if args.addresses < 1 or args.messages < 1 or args.sessions < 1 or args.rounds < 1:
        parser.error("--addresses, --messages, --sessions and --rounds must be at least 1")
    full = f"{args.addresses:,} addresses"
    warmup = min(50, args.messages)
    text = text_message()

    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        message = Path(tmp) / "text.eml"
        message.write_bytes(text.replace(b"\r\n", b"\n"))  # smtp-source sends CRLF
        sink_port = free_port()
        relays: dict[str, Relay] = {}
        for name, count in ((EMPTY, 0), (full, args.addresses)):
            workdir = Path(tmp) / ("empty" if count == 0 else "full")
            workdir.mkdir()
            port = free_port()
            config = relay_config(workdir, port, sink_port, "tracked", args.workers)
            print(f"{name}: preparing the store ...", flush=True)
            asyncio.run(listed(workdir / "pixelpost.db", count))
            command = [str(BIN / "pixelpost"), "relay", "-c", str(config)]
            relays[name] = Relay(command=command, port=port, workdir=workdir)
        with smtp_sink(sink_port) as sink:
            measured = run_rounds(
                relays,
                sink,
                message,
                messages=args.messages,
                sessions=args.sessions,
                rounds=args.rounds,
                warmup=warmup,
                order=lambda number: list(relays) if number % 2 == 0 else list(relays)[::-1],
            )
    rates, cpu = measured.rates, measured.cpu

    print(
        f"\n20 KB plain text: {len(text):,} bytes, one recipient each (not listed),"
        f" {args.messages} messages per round, {args.sessions} sessions, {args.rounds} rounds,"
        f" {os.cpu_count()} cores, pixelpost relay.workers = {args.workers}, tracking on;"
        " end to end, until smtp-sink has every message"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"{'suppression list':22} {'msg/s':>8} {'min':>8} {'max':>8} {'vs empty':>9}"
        f" {'CPU ms/msg':>11}"
    )
    for name, median in medians.items():
        print(
            f"{name:22} {median:8.1f} {min(rates[name]):8.1f} {max(rates[name]):8.1f}"
            f" {median / medians[EMPTY]:8.2f}x {statistics.median(cpu[name]):11.2f}"
        )
    ratios = [f / e for f, e in zip(rates[full], rates[EMPTY], strict=True)]
    print("with / without, round by round: " + " ".join(f"{r:.2f}x" for r in ratios))
    ratio = medians[full] / medians[EMPTY]
    verdict = "met" if ratio >= GOAL else "MISSED"
    print(
        f"goal: with {full} on the list at least {GOAL:.2f}x without: {verdict}"
        f" ({ratio:.2f}x; round by round {min(ratios):.2f}x to {max(ratios):.2f}x)"
    )
    if verdict != "met":
        sys.exit(1)


if __name__ == "__main__":
    main()
