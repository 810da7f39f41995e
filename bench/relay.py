"""End-to-end relay throughput through SMTP, side by side in one run.

    .venv/bin/python -m bench.relay [--kind html|text] [--messages 400] [--sessions 20]

Postfix's `smtp-source` sends the same message file, one recipient each, through each
system in turn to Postfix's `smtp-sink` (Debian's postfix package provides both):

  pixelpost (tracking on)    `pixelpost relay`, the configuration set tracks opens and clicks
  pixelpost (tracking off)   the same relay, a configuration set that tracks nothing
  aiosmtpd -> aiosmtplib     bench/passthrough.py, the plain pass-through proxy

Rounds alternate the systems so that a slow moment of the machine hits all of them;
the report gives each system's median messages per second and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.messages import html_message, text_message

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


@contextlib.contextmanager
def running(args: list[str], port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class System:
    name: str
    args: list[str]
    port: int


def pixelpost_config(workdir: Path, port: int, sink_port: int, config_set: str) -> Path:
    path = workdir / f"{config_set}.toml"
    path.write_text(
        f"""
default_config_set = "{config_set}"
[relay]
listen = "127.0.0.1:{port}"
hostname = "relay.bench"
spool = "{workdir / "spool"}"
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example.com"
[store]
url = "sqlite:///{workdir / "pixelpost.db"}"
[signing]
key_file = "{workdir / "signing.key"}"
[config_sets.tracked]
open_tracking = true
click_tracking = true
[config_sets.untracked]
open_tracking = false
click_tracking = false
"""
    )
    return path


def send_all(port: int, message: Path, messages: int, sessions: int) -> float:
    """Seconds for smtp-source to send `messages` and get every reply."""
    start = time.perf_counter()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-F",
            str(message),
            "-f",
            "news@example.com",
            "-t",
            "reader@example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
        timeout=600,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kind",
        choices=["html", "text"],
        default="html",
        help="100 KB HTML newsletter (default) or 20 KB plain text",
    )
    parser.add_argument("--messages", type=int, default=400, help="messages per system per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install Debian's postfix package")

    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        message = workdir / "message.eml"
        data = html_message() if args.kind == "html" else text_message()
        message.write_bytes(data.replace(b"\r\n", b"\n"))  # smtp-source sends LF as CRLF
        sink_port = free_port()
        sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"],
            stdout=subprocess.DEVNULL,
        )
        systems = []
        for config_set, label in (
            ("tracked", "pixelpost (tracking on)"),
            ("untracked", "pixelpost (tracking off)"),
        ):
            port = free_port()
            config = pixelpost_config(workdir, port, sink_port, config_set)
            systems.append(
                System(label, [str(BIN / "pixelpost"), "relay", "-c", str(config)], port)
            )
        port = free_port()
        systems.append(
            System(
                "aiosmtpd -> aiosmtplib",
                [sys.executable, "-m", "bench.passthrough", str(port), str(sink_port)],
                port,
            )
        )
        try:
            wait_for_port(sink_port, sink)
            rates: dict[str, list[float]] = {system.name: [] for system in systems}
            for round_number in range(args.rounds):
                for system in systems:
                    with running(system.args, system.port, Path(__file__).parent.parent):
                        send_all(system.port, message, min(50, args.messages), args.sessions)
                        seconds = send_all(system.port, message, args.messages, args.sessions)
                    rates[system.name].append(args.messages / seconds)
                    print(
                        f"round {round_number + 1}: {system.name:26} {args.messages / seconds:7.1f} msg/s",
                        flush=True,
                    )
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait()

    size = len(data)
    print(
        f"\n{args.kind} messages of {size:,} bytes, {args.messages} per round, "
        f"{args.sessions} sessions, {args.rounds} rounds, {os.cpu_count()} cores"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    tracking_off = medians["pixelpost (tracking off)"]
    passthrough = medians["aiosmtpd -> aiosmtplib"]
    print(f"{'system':26} {'msg/s':>8} {'vs tracking off':>16} {'vs pass-through':>16}")
    for name, rate in medians.items():
        print(f"{name:26} {rate:8.1f} {rate / tracking_off:15.2f}x {rate / passthrough:15.2f}x")


if __name__ == "__main__":
    main()
