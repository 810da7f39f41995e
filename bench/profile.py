"""Where `pixelpost relay` spends its CPU under load: the project's code or the rest.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile [--kind text|html] [--seconds 10] [--workers 2]

`smtp-source` keeps the relay (tracking on, fsync'd spool, `--workers` processes)
busy, relaying to `smtp-sink`, while py-spy samples every relay process. A message the
relay refuses, or that never reaches the sink, stops the profile (INVALID): the samples
would not be of the work asked for. Each sample is put where its innermost frame is,
counting from where the event loop or a thread pool hands over work (the startup
frames under every sample do not count):

  project code itself     a line of relay/, pixelpost/ or tracker/ (system calls made
                          directly from such a line, such as fsync, count here too)
  <library>, called by    a library's code (or asyncio's) under a project frame
  project code
  <library>               a library's code with no project frame above it: aiosmtpd
                          parsing commands, the event loop running callbacks, ...
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.messages import html_message, text_message
from bench.relay import BIN, ROOT, running, send_all, smtp_sink
from tests.net import free_port
from tests.relay_config import relay_config

PROJECT = re.compile(r"\((relay|pixelpost|tracker)/")
HANDOVERS = ("Handle._run (asyncio/events.py", "_worker (concurrent/futures/thread.py")


def library(frame: str) -> str:
    found = re.search(r"\(([^/:)]+)[/.]", frame)
    return found[1] if found else "other"


def categorise(
    samples: list[Path],
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total samples, samples by category, and the project's own lines by function."""
    total = 0
    categories: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for path in samples:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [frame for frame in stack.split(";") if frame]
            if not frames:
                continue
            total += int(count)
            start = max((i for i, f in enumerate(frames) if f.startswith(HANDOVERS)), default=-1)
            work = frames[start + 1 :] or frames[-1:]
            leaf = work[-1]
            if PROJECT.search(leaf):
                categories["project code itself"] += int(count)
                own[re.sub(r":\d+\)", ")", leaf)] += int(count)
            elif any(PROJECT.search(frame) for frame in work):
                categories[f"{library(leaf)}, called by project code"] += int(count)
            else:
                categories[library(leaf)] += int(count)
    return total, categories, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["text", "html"], default="text")
    parser.add_argument("--seconds", type=int, default=10, help="how long to sample")
    parser.add_argument("--workers", type=int, default=2, help="pixelpost's relay.workers")
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    py_spy = BIN / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} not found: .venv/bin/pip install py-spy")

    with tempfile.TemporaryDirectory(prefix="pixelpost-profile-") as tmp:
        workdir = Path(tmp)
        message = workdir / "message.eml"
        data = text_message() if args.kind == "text" else html_message()
        message.write_bytes(data.replace(b"\r\n", b"\n"))  # smtp-source sends LF as CRLF
        sink_port, port = free_port(), free_port()
        config = relay_config(workdir, port, sink_port, "tracked", args.workers)
        relay_args = [str(BIN / "pixelpost"), "--log-level", "warning", "relay", "-c", str(config)]
        with (
            smtp_sink(sink_port) as sink,
            running(relay_args, port, ROOT, workdir / "relay.log") as relay,
        ):
            time.sleep(2)  # the further workers start
            children = subprocess.run(
                ["pgrep", "-P", str(relay.pid), "-f", "spawn_main"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            pids = [relay.pid, *map(int, children)]
            print(f"sampling {len(pids)} relay processes for {args.seconds}s", flush=True)
            record = [str(py_spy), "record", "--format", "raw", "--nonblocking"]
            record += ["--duration", str(args.seconds)]
            spies = [
                subprocess.Popen(
                    [*record, "--pid", str(pid), "--output", str(workdir / f"{pid}.txt")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in pids
            ]
            sent = 0
            deadline = time.monotonic() + args.seconds + 1
            while time.monotonic() < deadline:
                send_all(port, message, 200, args.sessions)
                sent += 200
            for spy in spies:
                spy.wait(60)
            sink.wait_for(sent)
        total, categories, own = categorise([workdir / f"{pid}.txt" for pid in pids])

    print(f"\n{args.kind}: {sent} messages sent, {total} samples in {len(pids)} processes")
    for name, count in categories.most_common(16):
        print(f"{100 * count / total:6.1f}%  {name}")
    print("\nproject code itself, by function:")
    for name, count in own.most_common(10):
        print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    if sys.platform != "linux":
        raise SystemExit("Linux only (py-spy, /proc)")
    main()
