"""The suppression list on the send path: what looking up a message's recipients costs
with a million addresses on the list, side by side with an empty list.

    .venv/bin/python -m bench.suppression [--addresses 1000000] [--rounds 2000]

Puts `--addresses` addresses on the list of a new SQLite store through the store's own
`suppress` (batches of 10,000, as an import does), then times `suppressed` as the relay
calls it once per delivery attempt: for a message of 1 recipient (the common case, and a
tracked message's copy) and of 100 recipients, half of the lookups hitting listed
addresses. The baseline is the same lookups on an empty list of a second store, in the
same process, rounds alternating. Target (issue 17): at most 50 µs per recipient with a
million addresses on the list.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store import SQLiteStore

TARGET_US = 50.0
BATCH = 10_000


def address(number: int) -> str:
    return f"user{number}@example{number % 97}.org"


async def fill(store: SQLiteStore, count: int) -> float:
    """Put `count` addresses on the list; returns the seconds it took."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        await store.suppress(
            [
                Suppressed(address=address(n), reason=Reason.BOUNCE, created_at=now)
                for n in range(start, min(start + BATCH, count))
            ]
        )
        if start and start % 200_000 == 0:
            print(f"  {start:,} addresses listed", flush=True)
    return time.perf_counter() - started


async def lookups(store: SQLiteStore, batches: list[list[str]]) -> list[float]:
    """µs per recipient of each lookup of `batches`."""
    times = []
    for batch in batches:
        started = time.perf_counter()
        await store.suppressed(batch)
        times.append((time.perf_counter() - started) * 1e6 / len(batch))
    return times


def batches(count: int, size: int, listed: int, rng: random.Random) -> list[list[str]]:
    """`count` recipient lists of `size`, half of the addresses on a list of `listed`."""
    return [
        [
            address(rng.randrange(listed)) if rng.random() < 0.5 else f"new{rng.random()}@x.org"
            for _ in range(size)
        ]
        for _ in range(count)
    ]


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(17)
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as folder:
        full = await SQLiteStore.open(Path(folder) / "full.db")
        empty = await SQLiteStore.open(Path(folder) / "empty.db")
        try:
            print(f"listing {args.addresses:,} addresses ...", flush=True)
            took = await fill(full, args.addresses)
            print(f"listed in {took:.1f} s ({args.addresses / took:,.0f} addresses/s)")
            print(
                f"\nlookups, µs per recipient, {args.rounds:,} lookups each, "
                "lists alternating in rounds of 100"
            )
            print(f"{'message':<18}{'list':<20}{'median':>10}{'p99':>10}{'vs empty':>10}")
            for size in (1, 100):
                rounds = max(args.rounds // size, 20)
                work = batches(rounds, size, args.addresses, rng)
                results: dict[str, list[float]] = {"empty": [], "full": []}
                for start in range(0, rounds, 100):
                    chunk = work[start : start + 100]
                    results["empty"] += await lookups(empty, chunk)
                    results["full"] += await lookups(full, chunk)
                base = statistics.median(results["empty"])
                for name, label in (
                    ("empty", "empty"),
                    ("full", f"{args.addresses:,} addresses"),
                ):
                    times = sorted(results[name])
                    median = statistics.median(times)
                    p99 = times[int(len(times) * 0.99) - 1]
                    print(
                        f"{size:>3} recipient{'s' if size > 1 else ' ':<6}     {label:<20}"
                        f"{median:>10.1f}{p99:>10.1f}{median / base:>9.2f}x"
                    )
            print(f"\ntarget: at most {TARGET_US:.0f} µs per recipient with the full list")
        finally:
            await full.close()
            await empty.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2000, help="lookups per message size")
    asyncio.run(main(parser.parse_args()))
