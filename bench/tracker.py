"""Tracker throughput and latency under load, side by side with a minimal aiohttp app.

    .venv/bin/python -m bench.tracker [--duration 10] [--connections 50] [--rounds 3]

`wrk` (Debian's wrk package) requests the pixel (/o) and a redirect (/c) of each server
in turn, one wrk thread at 50 connections: `pixelpost tracker` with its SQLite store
(every hit committed, fsync'd, before the answer; routed and written to a file
destination by its dispatcher process), and two minimal aiohttp apps that answer the
same GIF and redirect and record nothing (bench/minimal_http.py): as typically
written (access log on, redirect raised), which reproduces the issue's reference
figures, and stripped to the bone. The report gives the median requests per second and
p99 latency of the rounds, and the ratios to both.
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
from datetime import UTC, datetime
from pathlib import Path

from bench.relay import free_port, running
from pixelpost.keys import decode_signing_key, load_or_create_key_file
from pixelpost.store import MessageRecord, SQLiteStore
from pixelpost.tokens import TokenCodec

BIN = Path(sys.executable).parent
MESSAGE_ID = "01a228d20a21020c7c34c59663927ded"
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk(url: str, *, duration: int, connections: int) -> tuple[float, float]:
    """Requests per second and p99 latency (seconds) of one wrk run."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", result.stdout).groups()  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        raise SystemExit(f"{url}: {errors[1]} error responses")
    return rate, float(value) * _UNITS[unit]


def prepare(workdir: Path, port: int) -> tuple[Path, dict[str, str]]:
    config = workdir / "pixelpost.toml"
    config.write_text(
        f"""
[tracker]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite:///{workdir / "pixelpost.db"}"
[signing]
key_file = "{workdir / "signing.key"}"
[config_sets.news]
destinations = ["archive"]
[destinations.archive]
type = "file"
path = "{workdir / "events.jsonl"}"
"""
    )

    async def record_message() -> None:
        store = await SQLiteStore.open(workdir / "pixelpost.db")
        mail = json.dumps({"messageId": MESSAGE_ID, "tags": {"ses:configuration-set": ["news"]}})
        await store.record(
            messages=[
                MessageRecord(
                    id=MESSAGE_ID, config_set="news", created_at=datetime.now(UTC), mail=mail
                )
            ]
        )
        await store.close()

    asyncio.run(record_message())
    codec = TokenCodec([decode_signing_key(load_or_create_key_file(workdir / "signing.key"))])
    paths = {
        "/o": f"/o/{codec.open_token(MESSAGE_ID)}",
        "/c": "/c/"
        + codec.click_token(MESSAGE_ID, 3, "https://shop.example.com/sale?a=1&b=2", {}),
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
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config, paths = prepare(workdir, port)
        stripped_port, typical_port = free_port(), free_port()
        systems = {
            "pixelpost tracker": (
                [str(BIN / "pixelpost"), "--log-level", "warning", "tracker", "-c", str(config)],
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
                        wrk(url, duration=1, connections=args.connections)  # warm up
                        rate, p99 = wrk(url, duration=args.duration, connections=args.connections)
                        results.setdefault((name, route), []).append((rate, p99))
                        print(
                            f"round {round_number + 1}: {name:18} {route}  {rate:8.0f} req/s  "
                            f"p99 {p99 * 1000:6.2f} ms",
                            flush=True,
                        )
        lines = (workdir / "events.jsonl").read_text().count("\n")
        with __import__("sqlite3").connect(workdir / "pixelpost.db") as connection:
            (recorded,) = connection.execute("SELECT count(*) FROM events").fetchone()

    print(
        f"\n{args.connections} connections, {args.duration}s per run, {args.rounds} rounds; "
        f"the tracker recorded {recorded:,} hits and wrote {lines:,} events to its file"
    )
    print(f"{'':24} {'req/s':>9} {'p99':>9} {'vs typical':>11} {'vs stripped':>12}")
    for route in paths:
        typical = statistics.median(r for r, _ in results[("minimal, typical", route)])
        stripped = statistics.median(r for r, _ in results[("minimal, stripped", route)])
        for name in systems:
            rate = statistics.median(r for r, _ in results[(name, route)])
            p99 = statistics.median(p for _, p in results[(name, route)])
            print(
                f"{name + ' ' + route:24} {rate:9.0f} {p99 * 1000:7.2f}ms "
                f"{rate / typical:10.2f}x {rate / stripped:11.2f}x"
            )


if __name__ == "__main__":
    main()
