"""RFC 8058 one-click unsubscribes (`POST /u/<token>`) against the pixel (`GET /o/<token>`),
side by side on the same tracker in one run.

    .venv/bin/python -m bench.unsubscribe [--duration 5] [--connections 50] [--rounds 3]

`pixelpost tracker` with its SQLite store and its dispatcher process (which writes every
event to a file destination), as bench/tracker.py runs it; wrk (Debian's wrk package),
one thread at 50 connections from 127.0.0.1, in turn on each route, every round:

    pixel             GET /o/<token>: the open recorded (group commit) before the GIF
    one-click, new    POST `List-Unsubscribe=One-Click`, each request a distinct
                      recipient's token: each 200 is an insert into the suppression list
                      and a Subscription event, committed before the answer
    one-click, again  the same POST for a recipient unsubscribed already (a provider's
                      retry): the store's check, no change, no event
    page              GET /u/<token>: the page, after a look at the list

Only answers count: wrk's failed requests (error statuses, socket errors) are counted
beside the figures, and the store must hold an entry and an event for every 200 of the
distinct run and a hit for every pixel; any shortfall, or distinct tokens running out
(`--tokens`), makes the run INVALID, with exit status 1.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.relay import running
from bench.tracker import BIN, MESSAGE_ID, Run, paths_script, prepare, wrk
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.net import free_port

ONE_CLICK = """
wrk.method = "POST"
wrk.body = "List-Unsubscribe=One-Click"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""
"""What the wrk script of a one-click unsubscribe sets up (bench.tracker.PATHS_LUA)."""
ROUTES = ("pixel", "one-click, new", "one-click, again", "page")


def tokens(codec: TokenCodec, count: int) -> list[str]:
    """`count` unsubscribe paths, each a distinct recipient of the bench's copy."""
    return [
        "/u/"
        + codec.unsubscribe_token(
            MESSAGE_ID, address=f"reader{n}@example.org", config_set="news", account=False
        )
        for n in range(count)
    ]


def script(workdir: Path, name: str, paths: list[str], start: int) -> Path:
    """The wrk script that POSTs to `paths` from index `start` (wrapping round)."""
    return paths_script(workdir, name, paths, start, ONE_CLICK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tokens", type=int, default=60_000, help="distinct recipients' tokens made"
    )
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    results: dict[str, list[Run]] = {}
    pixels = distinct_ok = used = 0
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config, paths = prepare(workdir, port)
        codec = TokenCodec([decode_signing_key((workdir / "signing.key").read_text().strip())])
        made = time.perf_counter()
        fresh = tokens(codec, args.tokens + 1)
        replayed = fresh.pop()  # unsubscribed once before the runs, then again and again
        made = time.perf_counter() - made
        base = f"http://127.0.0.1:{port}"
        command = [BIN / "pixelpost", "--log-level", "warning", "tracker", "-c", config]
        with running([str(c) for c in command], port, root, workdir / "tracker.log"):
            again = script(workdir, "again", [replayed], 0)
            wrk(base + replayed, duration=1, connections=1, script=again)
            for round_number in range(args.rounds):
                for route in ROUTES:
                    url, lua = base + paths["/o"], None
                    if route == "one-click, new":
                        lua = script(workdir, "new", fresh, used)
                    elif route == "one-click, again":
                        lua = again
                    elif route == "page":
                        url = base + fresh[0]
                    warmup = wrk(url, duration=1, connections=args.connections, script=lua)
                    if route == "one-click, new":  # the measured run starts past the warm-up
                        used += warmup.answered + 2 * args.connections
                        lua = script(workdir, "new", fresh, used)
                    run = wrk(
                        url, duration=args.duration, connections=args.connections, script=lua
                    )
                    if route == "one-click, new":
                        used += run.answered + 2 * args.connections  # in flight at the end
                        distinct_ok += warmup.answered + run.answered - warmup.errors - run.errors
                    if route == "pixel":
                        pixels += warmup.answered + run.answered
                    run = replace(run, errors=run.errors + warmup.errors)
                    results.setdefault(route, []).append(run)
                    print(
                        f"round {round_number + 1}: {route:17} {run.rate:8.0f} req/s  "
                        f"p99 {run.p99 * 1000:7.2f} ms  errors {run.errors}",
                        flush=True,
                    )
        with sqlite3.connect(workdir / "pixelpost.db") as connection:
            ((listed,),) = connection.execute(
                "SELECT count(*) FROM suppression WHERE reason = 'UNSUBSCRIBE'"
            )
            ((subscriptions,),) = connection.execute(
                "SELECT count(*) FROM events WHERE type = 'subscription'"
            )
            ((hits,),) = connection.execute("SELECT count(*) FROM events WHERE type = 'open'")

    print(
        f"\n{args.connections} connections, {args.duration}s per run, {args.rounds} rounds; "
        f"{args.tokens:,} distinct tokens made in {made:.1f}s, {min(used, args.tokens):,} used"
    )
    print(
        f"the store holds {listed:,} unsubscribes, {subscriptions:,} Subscription events "
        f"and {hits:,} opens"
    )
    pixel_rate = statistics.median(r.rate for r in results["pixel"])
    print(f"{'':18} {'req/s':>9} {'p99':>10} {'vs pixel':>9} {'errors':>7}")
    errors = 0
    for route in ROUTES:
        rate = statistics.median(r.rate for r in results[route])
        p99 = statistics.median(r.p99 for r in results[route])
        failed = sum(r.errors for r in results[route])
        errors += failed
        print(f"{route:18} {rate:9.0f} {p99 * 1000:8.2f}ms {rate / pixel_rate:8.2f}x {failed:7}")
    problems = []
    if errors:
        problems.append(f"{errors:,} requests failed (error statuses, socket errors)")
    if used > args.tokens:
        problems.append(f"the distinct tokens ran out ({used:,} wanted): raise --tokens")
    # One entry and one event per recipient: the distinct run's, and the replayed one's.
    if listed != subscriptions or listed < distinct_ok + 1:
        problems.append(
            f"{distinct_ok:,} unsubscribes answered 200, but {listed:,} entries and "
            f"{subscriptions:,} events in the store"
        )
    if hits < pixels:
        problems.append(f"the tracker answered {pixels:,} pixels but recorded {hits:,} opens")
    if problems:
        raise SystemExit("INVALID: " + "; ".join(problems))
    print(
        f"every request answered; each of the {distinct_ok:,} new unsubscribes answered is "
        "an entry and an event in the store"
    )


if __name__ == "__main__":
    main()
