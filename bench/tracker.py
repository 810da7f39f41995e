"""Tracker throughput and latency under load, side by side with a minimal aiohttp app.

    .venv/bin/python -m bench.tracker [--duration 10] [--connections 50] [--rounds 3]

`wrk` (Debian's wrk package) requests the pixel (/o) and a redirect (/c) of each server
in turn, one wrk thread at 50 connections, all from 127.0.0.1 (so the tracker's
connection limits are set above any load): `pixelpost tracker` with its SQLite store
(every hit committed, fsync'd, before the answer; routed and written to a file
destination by its dispatcher process), and two minimal aiohttp apps that answer the
same GIF and redirect and record nothing (bench/minimal_http.py): as typically
written (access log on, redirect raised), which reproduces the issue's reference
figures, and stripped to the bone. The report gives the median requests per second and
p99 latency of the rounds, and the ratios to both.

Only answers count: requests wrk saw fail (an error status, a connection refused,
reset or timed out) are counted beside the figures, and so are the tracker's answers
without a recorded hit (the store holding fewer hits than wrk got answers); either
makes the run INVALID, with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.relay import running
from bench.stores import count, open_url, sqlite_url
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key, load_or_create_key_file
from pixelpost.store import MessageRecord
from tests.net import free_port
from tests.relay_config import CONNECTIONS_LIMIT

BIN = Path(sys.executable).parent
MESSAGE_ID = "01a228d20a21020c7c34c59663927ded"
TRACKER = "pixelpost tracker"
TRACKER_ASYNCIO = "pixelpost, asyncio"
"""The same tracker on the standard library's event loop (PIXELPOST_EVENT_LOOP), where
the first runs on uvloop when it is installed."""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
HITS_SQL = "SELECT count(*) FROM events WHERE type IN ('open', 'click')"
PATHS_LUA = """
local paths = {{}}
for line in io.lines("{paths}") do paths[#paths + 1] = line end
local next_path = {start}
{setup}
request = function()
  next_path = next_path + 1
  return wrk.format(nil, paths[(next_path - 1) % #paths + 1])
end
"""
"""A wrk script: requests the paths in a file, one after the other from `start`, as
`setup` (Lua) says."""


@dataclass(frozen=True)
class Run:
    """One wrk run."""

    rate: float
    """Requests answered per second (wrk counts answers, whatever their status)."""
    p99: float
    """Seconds."""
    answered: int
    errors: int
    """Answers with a status of 400 or more, and connections refused, reset or timed
    out (wrk's socket errors)."""


def wrk(url: str, *, duration: int, connections: int, script: Path | None = None) -> Run:
    """One wrk run on `url` (requests as wrk's Lua `script` makes them, when given)."""
    scripted = ["-s", str(script)] if script is not None else []
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *scripted, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    )
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = (int(statuses[1]) if statuses else 0) + (
        sum(int(n) for n in sockets.groups()) if sockets else 0
    )
    return Run(rate, float(value) * _UNITS[unit], answered, errors)


def paths_script(
    workdir: Path, name: str, paths: list[str], start: int = 0, setup: str = ""
) -> Path:
    """The wrk script that requests `paths` from index `start` (wrapping round)."""
    listed = workdir / f"{name}.paths"
    listed.write_text("\n".join(paths) + "\n")
    lua = workdir / f"{name}-{start}.lua"
    lua.write_text(PATHS_LUA.format(paths=listed, start=start, setup=setup))
    return lua


def copy_ids(count: int) -> list[str]:
    """The ids of the benchmark's `count` copies, MESSAGE_ID first."""
    return [MESSAGE_ID, *(f"{MESSAGE_ID[:24]}{n:08x}" for n in range(1, count))]


def codec(workdir: Path) -> TokenCodec:
    """The token codec of the tracker that `prepare` configured in `workdir`."""
    return TokenCodec([decode_signing_key(load_or_create_key_file(workdir / "signing.key"))])


def prepare(
    workdir: Path, port: int, *, store_url: str | None = None, workers: int = 1, copies: int = 1
) -> tuple[Path, dict[str, str]]:
    """A tracker's configuration in `workdir` (its store at `store_url`, by default
    SQLite in `workdir`), with the benchmark's `copies` recorded in the store
    (`copy_ids`); the configuration file, and the path of a pixel and of a link of the
    first copy by route."""
    config = workdir / "pixelpost.toml"
    store_url = store_url or sqlite_url(workdir / "pixelpost.db")
    config.write_text(
        f"""
[tracker]
listen = "127.0.0.1:{port}"
max_connections = {CONNECTIONS_LIMIT}
max_connections_per_ip = {CONNECTIONS_LIMIT}
workers = {workers}
[store]
url = "{store_url}"
[signing]
key_file = "{workdir / "signing.key"}"
[config_sets.news]
destinations = ["archive"]
[destinations.archive]
type = "file"
path = "{workdir / "events.jsonl"}"
"""
    )

    async def record_copies() -> None:
        store = await open_url(store_url)
        now = datetime.now(UTC)
        await store.record(
            messages=[
                MessageRecord(
                    id=message_id,
                    config_set="news",
                    created_at=now,
                    mail=json.dumps(
                        {"messageId": message_id, "tags": {"ses:configuration-set": ["news"]}}
                    ),
                )
                for message_id in copy_ids(copies)
            ]
        )
        await store.close()

    asyncio.run(record_copies())
    tokens = codec(workdir)
    paths = {
        "/o": f"/o/{tokens.open_token(MESSAGE_ID)}",
        "/c": "/c/"
        + tokens.click_token(MESSAGE_ID, 3, "https://shop.example.com/sale?a=1&b=2", {}),
    }
    return config, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt install wrk")
    root = Path(__file__).resolve().parent.parent
    results: dict[tuple[str, str], list[Run]] = {}
    answered = 0
    """Answers from the tracker, warm-ups included: each must be a recorded hit."""
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config, paths = prepare(workdir, port)
        stripped_port, typical_port = free_port(), free_port()
        systems = {
            TRACKER: (
                [str(BIN / "pixelpost"), "--log-level", "warning", "tracker", "-c", str(config)],
                port,
            ),
            TRACKER_ASYNCIO: (
                [
                    "env",
                    "PIXELPOST_EVENT_LOOP=asyncio",
                    str(BIN / "pixelpost"),
                    "--log-level",
                    "warning",
                    "tracker",
                    "-c",
                    str(config),
                ],
                port,
            ),
            "minimal, typical": (
                [sys.executable, "-m", "bench.minimal_http", str(typical_port), "--typical"],
                typical_port,
            ),
            "minimal, stripped": (
                [sys.executable, "-m", "bench.minimal_http", str(stripped_port)],
                stripped_port,
            ),
        }
        for round_number in range(args.rounds):
            for name, (command, system_port) in systems.items():
                with running(command, system_port, root, workdir / f"{system_port}.log"):
                    for route, path in paths.items():
                        url = f"http://127.0.0.1:{system_port}{path}"
                        warmup = wrk(url, duration=1, connections=args.connections)
                        run = wrk(url, duration=args.duration, connections=args.connections)
                        run = replace(run, errors=run.errors + warmup.errors)
                        if name in (TRACKER, TRACKER_ASYNCIO):
                            answered += warmup.answered + run.answered
                        results.setdefault((name, route), []).append(run)
                        print(
                            f"round {round_number + 1}: {name:18} {route}  {run.rate:8.0f} req/s  "
                            f"p99 {run.p99 * 1000:6.2f} ms  errors {run.errors}",
                            flush=True,
                        )
        lines = (workdir / "events.jsonl").read_text().count("\n")
        recorded = asyncio.run(count(sqlite_url(workdir / "pixelpost.db"), HITS_SQL))

    print(
        f"\n{args.connections} connections, {args.duration}s per run, {args.rounds} rounds; "
        f"the tracker recorded {recorded:,} hits and wrote {lines:,} events to its file"
    )
    print(f"{'':24} {'req/s':>9} {'p99':>9} {'vs typical':>11} {'vs stripped':>12} {'errors':>7}")
    errors = 0
    for route in paths:
        typical = statistics.median(r.rate for r in results[("minimal, typical", route)])
        stripped = statistics.median(r.rate for r in results[("minimal, stripped", route)])
        for name in systems:
            rate = statistics.median(r.rate for r in results[(name, route)])
            p99 = statistics.median(r.p99 for r in results[(name, route)])
            failed = sum(r.errors for r in results[(name, route)])
            errors += failed
            print(
                f"{name + ' ' + route:24} {rate:9.0f} {p99 * 1000:7.2f}ms "
                f"{rate / typical:10.2f}x {rate / stripped:11.2f}x {failed:7}"
            )
    problems = []
    if errors:
        problems.append(f"{errors:,} requests failed (error statuses, socket errors)")
    if recorded < answered:
        problems.append(
            f"the tracker answered {answered:,} requests but recorded {recorded:,} hits"
        )
    if problems:
        raise SystemExit("INVALID: " + "; ".join(problems))
    print(f"every request answered; {answered:,} answers from the tracker, each a recorded hit")


if __name__ == "__main__":
    main()
