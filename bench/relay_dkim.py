"""The relay's throughput with DKIM signing on, side by side with signing off, in one run.

    .venv/bin/python -m bench.relay_dkim [--messages 2000] [--sessions 20] [--rounds 8]
                                         [--workers 2] [--check 20]

Three `pixelpost relay`s configured alike (bench/relay.py's configuration, tracking on,
`relay.workers = 2` unless `--workers`), each with a store and spool of its own, that
differ only in their `[dkim]` table: none (signing off); an rsa-2048 key for
example.com, the From domain of bench/messages.py's messages (signing on); and that
key with an Ed25519 one beside it (dual signing, two signatures a copy). Postfix's
`smtp-source` sends bench/relay.py's 20 KB plain text, one recipient each, to each
relay in turn, relaying to `smtp-sink`, and each round is timed until `smtp-sink` has
counted every message, as bench/relay.py times it. smtp-source stops at the first
refusal, and the benchmark with it (INVALID, exit status 1). Each relay is started
afresh for each round and warmed up with a few messages; the order of the three
rotates from round to round. Beside the messages per second, the CPU time of each
relay's processes over its timed run, per message: a shared machine's other work moves
it much less.

Before the rounds, each relay delivers `--check` messages to a second `smtp-sink` that
writes every message to a file (`-d`), and dkimpy verifies every one of them against
the keys' TXT records (`pixelpost.core.dkim.txt_record`): one signature each with
signing on, two with dual signing, none with it off. Anything else is INVALID: a relay
that signs nothing, or wrongly, would be timed doing less than its job.

Goal (issue 18): with signing on, at least 0.85x the messages per second without, for
20 KB text. Both signing relays are held to it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bench.dkim import verify
from bench.intake import relay_process
from bench.messages import text_message
from bench.relay import BIN, SinkCounter, measure, smtp_sink, stop, wait_for_port
from bench.relays_side_by_side import Relay, run_rounds
from pixelpost.core.dkim import DkimKey, from_domain, load_key
from tests.net import free_port
from tests.relay_config import relay_config

GOAL = 0.85
"""With signing on, at least this many times the messages per second without."""
OFF = "signing off"
RSA = "rsa-2048"
DUAL = "dual (rsa-2048 + ed25519)"
SIGNATURES = {OFF: 0, RSA: 1, DUAL: 2}
"""DKIM-Signature fields each delivered copy carries."""
RSA_SELECTOR, ED25519_SELECTOR = "s1", "s2"
DUMP_TIMEOUT = 10.0
"""Seconds for the dumping sink's files to appear once it has counted the messages."""


def pkcs8(private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def dkim_table(domain: str, rsa_file: Path, ed25519_file: Path | None) -> str:
    """The `[dkim]` table that signs `domain`'s mail with the key files."""
    lines = [
        f'[dkim.domains."{domain}"]',
        f'selector = "{RSA_SELECTOR}"',
        f'key = "{rsa_file}"',
    ]
    if ed25519_file is not None:
        lines += [f'ed25519_selector = "{ED25519_SELECTOR}"', f'ed25519_key = "{ed25519_file}"']
    return "\n".join(lines) + "\n"


def configured(workdir: Path, port: int, sink_port: int, workers: int, table: str) -> list[str]:
    """The command that runs a relay with bench/relay.py's configuration and `table`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = relay_config(workdir, port, sink_port, "tracked", workers)
    config.write_text(config.read_text() + "\n" + table)
    return [str(BIN / "pixelpost"), "relay", "-c", str(config)]


@contextlib.contextmanager
def dumping_sink(port: int, folder: Path) -> Iterator[SinkCounter]:
    """smtp-sink on 127.0.0.1:`port`, counting, and writing each message to a file of
    its own in `folder` (its own header lines first, lines ending in LF)."""
    folder.chmod(0o777)  # smtp-sink writes as nobody
    process = subprocess.Popen(
        ["smtp-sink", "-c", "-u", "nobody", "-d", f"{folder}/m.", f"127.0.0.1:{port}", "64"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        counter = SinkCounter(process.stdout)
        wait_for_port(port, process)
        yield counter
    finally:
        stop(process, "smtp-sink -d")
        process.stdout.close()


def dumped(folder: Path, count: int) -> list[bytes]:
    """The `count` messages smtp-sink wrote to `folder`, with CRLF line endings."""
    deadline = time.monotonic() + DUMP_TIMEOUT
    while len(files := sorted(folder.glob("m.*"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(files) != count:
        raise SystemExit(f"INVALID: smtp-sink wrote {len(files)} of {count} messages")
    return [path.read_bytes().replace(b"\n", b"\r\n") for path in files]


def check(
    relays: dict[str, tuple[Path, str]],
    workers: int,
    message: Path,
    count: int,
    sessions: int,
    keys: list[DkimKey],
) -> None:
    """Each relay delivers `count` messages to a sink that keeps them; dkimpy verifies
    every signature. SystemExit, INVALID, when one does not verify or is missing."""
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-dkim-") as tmp:
        Path(tmp).chmod(0o711)  # for smtp-sink, as nobody, to reach its folder
        for name, (workdir, table) in relays.items():
            folder = Path(tmp) / f"sink-{SIGNATURES[name]}"
            folder.mkdir()
            port, sink_port = free_port(), free_port()
            command = configured(workdir / "check", port, sink_port, workers, table)
            log, spool = workdir / "check" / "relay.log", workdir / "check" / "spool"
            with dumping_sink(sink_port, folder) as sink, relay_process(command, log, spool, port):
                measure(sink, port, message, count, sessions)
            for copy in dumped(folder, count):
                try:
                    verify(f"{name}, a delivered copy", copy, keys, SIGNATURES[name])
                except dkim.ValidationError as exc:  # dkimpy raises for a body hash mismatch
                    raise SystemExit(f"INVALID: {name}, a delivered copy: {exc}") from None
            print(
                f"{name}: {count} delivered copies, {SIGNATURES[name]} valid signature(s) each"
                " (dkimpy)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per relay per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="pixelpost's relay.workers")
    parser.add_argument(
        "--check", type=int, default=20, help="copies per relay verified with dkimpy first"
    )
    args = parser.parse_args()
    if min(args.messages, args.sessions, args.rounds, args.workers, args.check) < 1:
        parser.error("--messages, --sessions, --rounds, --workers and --check must be at least 1")
    warmup = min(50, args.messages)
    text = text_message()
    domain = from_domain(text)
    if domain is None:
        raise SystemExit("bench/messages.py's text message has no From domain")

    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        message = Path(tmp) / "text.eml"
        message.write_bytes(text.replace(b"\r\n", b"\n"))  # smtp-source sends CRLF
        rsa_file, ed25519_file = Path(tmp) / "rsa2048.pem", Path(tmp) / "ed25519.pem"
        rsa_file.write_bytes(pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        ed25519_file.write_bytes(pkcs8(ed25519.Ed25519PrivateKey.generate()))
        keys = [
            load_key(domain=domain, selector=RSA_SELECTOR, pem=rsa_file.read_bytes()),
            load_key(domain=domain, selector=ED25519_SELECTOR, pem=ed25519_file.read_bytes()),
        ]
        relays = {
            OFF: (Path(tmp) / "off", ""),
            RSA: (Path(tmp) / "rsa", dkim_table(domain, rsa_file, None)),
            DUAL: (Path(tmp) / "dual", dkim_table(domain, rsa_file, ed25519_file)),
        }
        check(relays, args.workers, message, args.check, args.sessions, keys)

        sink_port = free_port()
        commands: dict[str, Relay] = {}
        for name, (workdir, table) in relays.items():
            port = free_port()
            command = configured(workdir, port, sink_port, args.workers, table)
            commands[name] = Relay(command=command, port=port, workdir=workdir)
        names = list(commands)
        with smtp_sink(sink_port) as sink:
            measured = run_rounds(
                commands,
                sink,
                message,
                messages=args.messages,
                sessions=args.sessions,
                rounds=args.rounds,
                warmup=warmup,
                order=lambda number: names[number % len(names) :] + names[: number % len(names)],
                width=26,
            )
    rates, cpu = measured.rates, measured.cpu

    print(
        f"\n20 KB plain text: {len(text):,} bytes, From {domain}, one recipient each,"
        f" {args.messages} messages per round, {args.sessions} sessions, {args.rounds} rounds,"
        f" {os.cpu_count()} cores, pixelpost relay.workers = {args.workers}, tracking on;"
        " end to end, until smtp-sink has every message"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{'DKIM':26} {'msg/s':>8} {'min':>8} {'max':>8} {'vs off':>8} {'CPU ms/msg':>11}")
    for name, median in medians.items():
        print(
            f"{name:26} {median:8.1f} {min(rates[name]):8.1f} {max(rates[name]):8.1f}"
            f" {median / medians[OFF]:7.2f}x {statistics.median(cpu[name]):11.2f}"
        )
    missed = False
    for name in (RSA, DUAL):
        ratios = [on / off for on, off in zip(rates[name], rates[OFF], strict=True)]
        print(f"{name} / off, round by round: " + " ".join(f"{r:.2f}x" for r in ratios))
        ratio = medians[name] / medians[OFF]
        verdict = "met" if ratio >= GOAL else "MISSED"
        missed = missed or verdict != "met"
        print(
            f"goal: signing on ({name}) at least {GOAL:.2f}x off: {verdict}"
            f" ({ratio:.2f}x; round by round {min(ratios):.2f}x to {max(ratios):.2f}x)"
        )
    if missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
