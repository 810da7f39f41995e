"""The intake's throughput: delivery status notifications taken end to end, side by side
with the relay's own intake of 20 KB messages, in one run.

    .venv/bin/python -m bench.intake [--messages 2000] [--sessions 20] [--rounds 5]
                                     [--workers 1]   (pixelpost's relay.workers)

One `pixelpost relay` process, configured as bench/relay.py configures it (tracking on,
delivering to Debian's `smtp-sink`) plus a return-path domain for its set and an
`[intake]` listener, is sent, by the same asyncio client (bench/smtp_client.py: one
message per session, as smtp-source sends them, `--sessions` sessions at once):

  intake    pixelpost intake (DSNs)    RFC 3464 reports from `<>`, each to the return
                                       path `b-<token>@bounces.example.com` of its own
                                       copy, recorded in the store beforehand; the intake
                                       verifies the token, reads the report, looks the
                                       copy up, records its Bounce (SQLite, committed) and
                                       suppresses the address, then answers 250
  relay     pixelpost relay (20 KB)    bench/relay.py's 20 KB plain text, one recipient;
                                       the relay answers 250 once the message is fsync'd
                                       in its spool, and delivers it to smtp-sink meanwhile
  sink      smtp-sink alone            the same client and messages straight to
                                       smtp-sink: the ceiling of the measurement itself

Each report is about 3.6 KB, as a Postfix upstream writes one (`pixelpost.core.dsn`):
the text part, the delivery status of a 5.1.1, and the returned copy's header section
(its Received fields, a DKIM signature, List-Unsubscribe ...). Both sides are timed
until the client has every 250: that is the intake's end (the event is in the store),
and the relay's acceptance (its deliveries go on meanwhile, on the same cores, and are
waited for, untimed, before the next measurement). Beside the messages per second, the
CPU time of pixelpost's processes per message, over the timed run (the relay's until
smtp-sink has every message, deliveries included): a shared machine's other work moves
it much less. The intake runs in the relay's first process only, so the relay runs one
process (`--workers 1`) unless asked. Every system is started afresh for each round and
warmed up with a few messages; rounds alternate the systems, in the opposite order every
other round. Every DSN answered 250 must be a Bounce in the store and its address on the
list, and every message must be answered 250: anything else is counted and makes the
goal INVALID, with exit status 1, as when it is MISSED. Goal (issue 17): the intake
takes at least 1.0x the messages per second that the relay takes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from bench.memory import tree_pids
from bench.messages import text_message
from bench.relay import BIN, ROOT, SETTLE, SinkCounter, running, smtp_sink
from bench.smtp_client import Refused, Session, data_payload
from pixelpost.core.dsn import Failure, notification
from pixelpost.core.headers import parse_header_section, received_field
from pixelpost.core.ids import new_message_id
from pixelpost.core.mail import common_headers, mail_object
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key, load_or_create_key_file
from pixelpost.store import MessageRecord, SQLiteStore
from tests.net import free_port
from tests.relay_config import CONNECTIONS_LIMIT, relay_config

INTAKE = "pixelpost intake (DSNs)"
RELAY = "pixelpost relay (20 KB)"
SINK_DSN = "smtp-sink alone (DSNs)"
SINK_TEXT = "smtp-sink alone (20 KB)"
SYSTEMS = {"intake": (INTAKE,), "relay": (RELAY,), "sink": (SINK_DSN, SINK_TEXT)}
GOAL = 1.0
"""The intake's messages per second, at least this many times the relay's."""
RETURN_DOMAIN = "bounces.example.com"
CONFIG_SET = "tracked"
RECORD_BATCH = 1000
"""Copies recorded in the store per write, beforehand."""


@dataclass(frozen=True)
class Mail:
    """One message as the client sends it."""

    sender: str
    recipient: str
    payload: bytes
    """After DATA: CRLF lines, dot-stuffed, the final dot."""


@dataclass(frozen=True)
class Returned:
    """A copy recorded in the store, and the report that comes back for it."""

    record: MessageRecord
    report: Mail


def intake_config(
    workdir: Path, port: int, intake_port: int, sink_port: int, workers: int
) -> Path:
    """bench/relay.py's configuration, its set sending from return paths under
    RETURN_DOMAIN, and an intake on `intake_port` that lets the whole load in."""
    path = relay_config(workdir, port, sink_port, CONFIG_SET, workers)
    text = path.read_text().replace(
        f"[config_sets.{CONFIG_SET}]\n",
        f'[config_sets.{CONFIG_SET}]\nreturn_path_domain = "{RETURN_DOMAIN}"\n',
    )
    path.write_text(
        text + f'[intake]\nlisten = "127.0.0.1:{intake_port}"\n'
        f"max_connections = {CONNECTIONS_LIMIT}\nmax_connections_per_ip = {CONNECTIONS_LIMIT}\n"
    )
    return path


def _base64(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode("ascii")


def _folded(text: str, width: int = 72) -> str:
    return "\r\n\t".join(text[i : i + width] for i in range(0, len(text), width))


def client_headers(number: int, recipient: str, when: datetime, rng: random.Random) -> bytes:
    """The header section of a newsletter as a mailer hands it to the relay."""
    unsubscribe = _base64(rng, 24).replace("/", "_").replace("+", "-")
    boundary = f"==============={rng.getrandbits(63):019d}=="
    return (
        "From: Example News <news@example.com>\r\n"
        f"To: {recipient}\r\n"
        "Reply-To: Example Support <support@example.com>\r\n"
        "Subject: This week's newsletter: spring sale, new arrivals and the store events\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"Message-ID: <{rng.getrandbits(64):016x}.{number}@mailer.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative;\r\n\tboundary="{boundary}"\r\n'
        f"List-Unsubscribe: <https://example.com/unsubscribe/{unsubscribe}>,\r\n"
        f"\t<mailto:unsubscribe@example.com?subject=unsubscribe%20{unsubscribe}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "List-Id: Example News <news.example.com>\r\n"
        "Feedback-ID: spring-sale:newsletter:example\r\n"
        "X-Mailer: Example Mailer 4.2\r\n"
        "\r\n"
    ).encode()


def returned_copy(
    copy_id: str, recipient: str, headers: bytes, when: datetime, rng: random.Random
) -> bytes:
    """The copy as the upstream that bounced it returns it: its own Received field and
    DKIM signature above the relay's Received field and the mailer's headers, then a
    line of the body (a report returns the header section only)."""
    queue_id = _base64(rng, 6).replace("/", "x").replace("+", "y")
    upstream = (
        "Received: from relay.test (relay.test [192.0.2.10])\r\n"
        f"\tby smtp-out.example.com (Postfix) with ESMTPS id 4Qx{queue_id}\r\n"
        f"\tfor <{recipient}>; {format_datetime(when)}\r\n"
    ).encode()
    signature = (
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;\r\n"
        f"\ts=mail2024; t={int(when.timestamp())};\r\n"
        "\th=from:to:reply-to:subject:date:message-id:mime-version:content-type:\r\n"
        "\t list-unsubscribe:list-unsubscribe-post:list-id:feedback-id;\r\n"
        f"\tbh={_base64(rng, 32)};\r\n"
        f"\tb={_folded(_base64(rng, 256))}\r\n"
    ).encode()
    relay = received_field(
        helo="mailer.example.com",
        client_ip="192.0.2.20",
        hostname="relay.test",
        protocol="ESMTP",
        queue_id=copy_id,
        recipient=recipient,
        when=when,
    )
    body = b"This is a multi-part message in MIME format.\r\n"
    return upstream + signature + relay + headers + body


def make_returned(count: int, codec: TokenCodec) -> list[Returned]:
    """`count` copies, each to its own recipient, and the DSN of a 5.1.1 for each."""
    rng = random.Random(17)
    sent = datetime.now(UTC) - timedelta(minutes=5)
    returned = []
    for number in range(count):
        copy_id = new_message_id()
        recipient = f"reader{number}@example.org"
        headers = client_headers(number, recipient, sent, rng)
        section = parse_header_section(headers)
        mail = mail_object(
            message_id=copy_id,
            sent_at=sent,
            source="news@example.com",
            destination=[recipient],
            headers=[(f.name, f.value(headers)) for f in section.fields],
            common=common_headers(headers[: section.body_offset]),
            config_set=CONFIG_SET,
            message_tags={"campaign": ["spring"]},
            source_ip="192.0.2.20",
            caller_identity="192.0.2.20",
        )
        record = MessageRecord(
            id=copy_id, config_set=CONFIG_SET, created_at=sent, mail=json.dumps(mail)
        )
        return_path = codec.return_address(copy_id, RETURN_DOMAIN)
        report = notification(
            original=returned_copy(copy_id, recipient, headers, sent, rng),
            sender=return_path,
            failures=[
                Failure(
                    recipient=recipient,
                    status="5.1.1",
                    diagnostic=f"host mx.example.org[198.51.100.7] said: 550 5.1.1"
                    f" <{recipient}>: Recipient address rejected: User unknown in virtual"
                    " mailbox table (in reply to RCPT TO command)",
                    remote_mta="mx.example.org",
                )
            ],
            reporting_mta="smtp-out.example.com",
            arrival=sent,
        )
        returned.append(Returned(record, Mail("", return_path, data_payload(report))))
    return returned


async def record_copies(database: Path, returned: Sequence[Returned]) -> None:
    store = await SQLiteStore.open(database)
    try:
        for start in range(0, len(returned), RECORD_BATCH):
            batch = returned[start : start + RECORD_BATCH]
            await store.record(messages=[item.record for item in batch])
    finally:
        await store.close()


@dataclass
class Run:
    """What the client saw of one run."""

    seconds: float = 0.0
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def send_one(port: int, mail: Mail, run: Run) -> None:
    """One session, one message; what goes wrong is counted in `run`."""
    try:
        session = await Session.open(port)
    except Refused as exc:
        run.refused.append(f"greeting or EHLO: {exc}")
        return
    except (OSError, TimeoutError) as exc:
        run.failed.append(repr(exc))
        return
    try:
        await session.command(f"MAIL FROM:<{mail.sender}>".encode(), 250)
        await session.command(f"RCPT TO:<{mail.recipient}>".encode(), 250)
        await session.command(b"DATA", 354)
        await session.send(mail.payload)
        await session.reply(250)
    except Refused as exc:
        run.refused.append(str(exc))
        await session.close()
        return
    except (OSError, TimeoutError) as exc:
        run.failed.append(repr(exc))
        await session.close(quit=False)
        return
    run.accepted += 1
    await session.close()


async def send_all(port: int, mails: Sequence[Mail], sessions: int) -> Run:
    """`mails`, `sessions` at a time, each in a session of its own; timed until the
    last session has ended."""
    run = Run()
    pending = iter(mails)

    async def client() -> None:
        for mail in pending:
            await send_one(port, mail, run)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(sessions)))
    run.seconds = time.perf_counter() - start
    return run


def tree_cpu(root: int) -> float:
    """CPU seconds (user and system) of process `root` and its descendants so far."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def relay_process(
    command: list[str], log: Path, spool: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """`pixelpost relay` afresh, once it listens on `port` (its relay's or its intake's);
    its spool removed after it."""
    try:
        with running(command, port, ROOT, log) as process:
            yield process
            time.sleep(SETTLE)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


@dataclass(frozen=True)
class Measurement:
    system: str
    run: Run
    warmup: Run
    cpu: float | None = None
    """CPU seconds of the system's processes over the timed run (the relay: until
    smtp-sink had every message)."""
    delivered: float | None = None
    """Seconds until smtp-sink had every message (the relay)."""


@dataclass
class Setup:
    """What every measurement needs."""

    sink: SinkCounter
    sink_port: int
    start: Callable[[int], contextlib.AbstractContextManager[subprocess.Popen[bytes]]]
    """Starts `pixelpost relay` afresh, listening on the given one of its two ports."""
    relay_port: int
    intake_port: int
    reports: Iterator[Mail]
    """The DSNs not sent yet, each for a copy of its own."""
    text: Mail
    messages: int
    warmup: int
    sessions: int

    def mails(self, system: str, count: int) -> list[Mail]:
        if system in (INTAKE, SINK_DSN):
            return [next(self.reports) for _ in range(count)]
        return [self.text] * count


def measure(system: str, setup: Setup) -> Measurement:
    """One measurement of `system`: a warm-up, then `setup.messages` timed; for the
    relay, then until smtp-sink has every message."""
    port = {INTAKE: setup.intake_port, RELAY: setup.relay_port}.get(system, setup.sink_port)
    started = setup.start(port) if system in (INTAKE, RELAY) else contextlib.nullcontext()
    with started as process:
        target = setup.sink.count + setup.warmup
        warmup = asyncio.run(send_all(port, setup.mails(system, setup.warmup), setup.sessions))
        if system != INTAKE:
            setup.sink.wait_for(target - len(warmup.refused) - len(warmup.failed))
        target = setup.sink.count + setup.messages
        mails = setup.mails(system, setup.messages)
        cpu = tree_cpu(process.pid) if process is not None else None
        start = time.perf_counter()
        run = asyncio.run(send_all(port, mails, setup.sessions))
        if system != INTAKE:
            setup.sink.wait_for(target - len(run.refused) - len(run.failed))
        delivered = time.perf_counter() - start if system == RELAY else None
        if process is not None and cpu is not None:
            cpu = tree_cpu(process.pid) - cpu
        return Measurement(system, run, warmup, cpu, delivered)


def stored(database: Path) -> tuple[int, int]:
    """Bounce events and suppressed addresses in the store."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (bounces,) = connection.execute(
            "SELECT count(*) FROM events WHERE type = 'bounce'"
        ).fetchone()
        (suppressed,) = connection.execute("SELECT count(*) FROM suppression").fetchone()
    return int(bounces), int(suppressed)


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}x to {max(values):.2f}x"


def run_rounds(setup: Setup, systems: list[str], rounds: int) -> list[Measurement]:
    """Every system measured once a round, in the opposite order every other round."""
    measurements = []
    for number in range(rounds):
        for system in systems if number % 2 == 0 else systems[::-1]:
            measurement = measure(system, setup)
            measurements.append(measurement)
            run = measurement.run
            delivered = (
                f", all at the sink after {measurement.delivered:5.2f}s"
                if measurement.delivered is not None
                else ""
            )
            cpu = (
                f", {measurement.cpu * 1000 / setup.messages:.2f} ms CPU a message"
                if measurement.cpu is not None
                else ""
            )
            print(
                f"round {number + 1}: {system:26} {run.accepted / run.seconds:7.1f} msg/s"
                f" (all replies after {run.seconds:5.2f}s{delivered}{cpu}),"
                f" {len(run.refused)} refused, {len(run.failed)} failed",
                flush=True,
            )
    return measurements


def problems_of(measurements: Sequence[Measurement]) -> list[str]:
    """What was refused or failed, warm-ups included, by kind."""
    seen = Counter(
        f"{m.system}: {problem}"
        for m in measurements
        for run in (m.warmup, m.run)
        for problem in (*run.refused, *run.failed)
    )
    return [f"{count} times: {problem}" for problem, count in seen.most_common()]


def report(
    measurements: Sequence[Measurement],
    sizes: tuple[float, int],
    stored_after: tuple[int, int],
    args: argparse.Namespace,
) -> bool:
    """Prints the figures and the goal's verdict; whether the goal was met."""
    dsn_size, text_size = sizes
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for m in measurements:
        rates.setdefault(m.system, []).append(m.run.accepted / m.run.seconds)
        if m.cpu is not None:
            cpu.setdefault(m.system, []).append(m.cpu * 1000 / args.messages)
    print(
        f"\nDSNs: {dsn_size:,.0f} bytes on average, each to its own copy's return path;"
        f" 20 KB plain text: {text_size:,} bytes, one recipient; {args.messages} messages"
        f" per system per round, {args.sessions} sessions (a message each), {args.rounds}"
        f" rounds, {os.cpu_count()} cores, pixelpost relay.workers = {args.workers};"
        " until the client has every 250"
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians.get(RELAY)
    print(
        f"{'system':26} {'msg/s':>8} {'min':>8} {'max':>8} {'CPU ms/msg':>11}"
        + (" vs relay" if base else "")
    )
    for name, median in medians.items():
        used = f"{statistics.median(cpu[name]):11.2f}" if name in cpu else f"{'-':>11}"
        versus = f" {median / base:8.2f}x" if base else ""
        print(
            f"{name:26} {median:8.1f} {min(rates[name]):8.1f} {max(rates[name]):8.1f}"
            f" {used}{versus}"
        )
    problems = problems_of(measurements)
    if INTAKE in rates:
        taken = sum(m.warmup.accepted + m.run.accepted for m in measurements if m.system == INTAKE)
        bounces, suppressed = stored_after
        print(
            f"store: {taken:,} DSNs answered 250 (warm-ups included), {bounces:,} Bounce"
            f" events recorded, {suppressed:,} addresses suppressed"
        )
        if bounces != taken or suppressed != taken:
            problems.append(f"the store does not hold what the intake took ({taken:,} DSNs)")
    if INTAKE in rates and base:
        ratios = [i / r for i, r in zip(rates[INTAKE], rates[RELAY], strict=True)]
        print("intake / relay, round by round: " + " ".join(f"{r:.2f}x" for r in ratios))
        ratio = medians[INTAKE] / base
        verdict = "INVALID" if problems else "met" if ratio >= GOAL else "MISSED"
        print(
            f"goal: the intake at least {GOAL:.1f}x the relay's intake: {verdict}"
            f" ({ratio:.2f}x; round by round {spread(ratios)})"
        )
    else:
        verdict = "INVALID" if problems else "met"
    for problem in problems:
        print(f"  refused or failed {problem}" if " times: " in problem else f"  {problem}")
    return verdict == "met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per system per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="pixelpost's relay.workers (default 1: the intake runs in one process)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    args = parser.parse_args()
    keys = [key.strip() for key in args.systems.split(",") if key.strip()]
    if not keys or any(key not in SYSTEMS for key in keys):
        parser.error(f"--systems: pick from {','.join(SYSTEMS)}")
    if args.messages < 1 or args.sessions < 1 or args.rounds < 1:
        parser.error("--messages, --sessions and --rounds must be at least 1")
    systems = [name for key in keys for name in SYSTEMS[key]]
    warmup = min(50, args.messages)

    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        sink_port, port, intake_port = free_port(), free_port(), free_port()
        config = intake_config(workdir, port, intake_port, sink_port, args.workers)
        codec = TokenCodec([decode_signing_key(load_or_create_key_file(workdir / "signing.key"))])
        reporting = sum(name in (INTAKE, SINK_DSN) for name in systems)
        count = args.rounds * (warmup + args.messages) * reporting
        print(f"writing {count:,} copies to the store and a DSN for each ...", flush=True)
        returned = make_returned(count, codec)
        database = workdir / "pixelpost.db"
        asyncio.run(record_copies(database, returned))
        before = stored(database)
        text = text_message()
        dsn_size = statistics.mean(len(r.report.payload) for r in returned) if returned else 0.0
        command = [str(BIN / "pixelpost"), "relay", "-c", str(config)]
        with smtp_sink(sink_port) as sink:
            setup = Setup(
                sink=sink,
                sink_port=sink_port,
                start=functools.partial(
                    relay_process, command, workdir / "relay.log", workdir / "spool"
                ),
                relay_port=port,
                intake_port=intake_port,
                reports=iter([r.report for r in returned]),
                text=Mail("news@example.com", "reader@example.org", data_payload(text)),
                messages=args.messages,
                warmup=warmup,
                sessions=args.sessions,
            )
            measurements = run_rounds(setup, systems, args.rounds)
        after = stored(database)
        difference = (after[0] - before[0], after[1] - before[1])
    if not report(measurements, (dsn_size, len(text)), difference, args):
        sys.exit(1)


if __name__ == "__main__":
    main()
