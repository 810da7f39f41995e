"""Event destinations: events per second from the outbox to each kind of destination,
side by side in one run, each held against its own client's rate for the same bodies.

    .venv/bin/python -m bench.destinations [--events 20000] [--rounds 2] [--stall 30]
                      [--types file-ses,file-envelope,webhook,sns,nats,redis,amqp]

One SQLite store is filled once in a temporary folder with `--events` events recorded
through the store's own writer, as bench/stats.py records them (copies in 3
configuration sets with their Send, Delivery or Bounce, opens and clicks). Every run of
pixelpost gets a copy of that store (every event still to route) and a
`pipeline.dispatch.Dispatcher` in this process, built as `pixelpost dispatch` builds it
(`make_senders`, one aiohttp session), with one destination that every set sends all its
events to; the roll-up and retention jobs do not run. The clock runs from starting the
dispatcher until the store counts every event delivered to that destination; then the
consumer's side is read back (the file, the receiver's requests, the stream, the queue)
and must hold every event id.

The baseline of each kind is its client alone, in this process, with the same bodies
(the event JSON the store renders, claimed from a copy beforehand), the same subjects,
keys and headers, and the batch size and batches in flight of pixelpost's sender:

  file-ses, file-envelope  one open file: the batch's lines written, then fsync
  webhook, sns             a bare aiohttp session POSTing the event bodies to the same
                           receiver (an aiohttp app in a process of its own, answering
                           200, which keeps each request's event id)
  nats                     nats-py: JetStream publishes with Nats-Msg-Id, each awaiting
                           its acknowledgement, a batch's at once
  redis                    redis-py asyncio: a pipeline of XADD (MAXLEN ~) per batch
  amqp                     aio-pika: persistent, mandatory publishes on a channel with
                           publisher confirms, a batch's at once

The brokers are the machine's (NATS with JetStream at 127.0.0.1:4222, Redis at :6379,
RabbitMQ at :5672 as guest); every run makes its own stream, key, exchange and queue,
named uniquely, and removes them after (the stream and the exchange as the sender would
declare them, so that both sides publish into the same kind of thing). The sns
destination has `confirm = false` and a key from `pixelpost sns keygen`. A kind whose
broker cannot be reached, or whose key could not be made, is skipped with a line that
says why. Rounds alternate the kinds, in the reverse order every other round, and which
side of a kind goes first. Reports the median events per second of each side, their
ratio, and the CPU seconds this process spent (dispatcher, store threads and sender; or
the client) and the peer spent (the receiver, or the broker's server process) during
the timed part.

Goal: every kind at least 0.7x its client's own rate. An event id missing at the end
(nothing delivered for `--stall` seconds), one that the store does not hold, or a
failed attempt makes the kind INVALID; the exit status is 1 then, as when a goal is
MISSED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import aiohttp
import aiormq.exceptions
import nats.errors
import redis.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from bench.intake import tree_cpu
from bench.relay import ROOT, STOP_TIMEOUT
from bench.stats import CONFIG_SETS, fill
from pipeline.destinations import make_senders
from pipeline.destinations.nats import DUPLICATE_WINDOW, stream_subject
from pipeline.dispatch import Dispatcher
from pixelpost.config import Config, parse_config_text
from pixelpost.core.event_types import EventType
from pixelpost.core.values import describe_url
from pixelpost.store import Claimed, Route, SQLiteStore
from pixelpost.store.sqlite import outbox_path

GOAL = 0.7
"""Each kind's events per second against its client's own, at least."""
STALL = 30.0
"""Give up when nothing more was delivered for this long."""
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DESTINATION = "out"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_MAXLEN = 1_000_000
"""The destination's default `maxlen`, which the baseline's XADD trims to as well."""
POLL = 0.02
"""How often the store's delivered count is read during a run."""
READ_BACK_IDLE = 5.0
"""Reading a stream or a queue back gives up when its next message takes this long."""


def fill_template(template: str, claimed: Claimed) -> str:
    """A subject or routing key with `{config_set}` and `{event_type}` filled in, as the
    configuration describes them (`delivery`, `open` ...)."""
    return template.replace("{config_set}", claimed.config_set).replace(
        "{event_type}", claimed.event_type.config_name
    )


def body_key(body: bytes) -> str:
    """What stands for an event whose id its consumer does not see (a line of the "ses"
    file format)."""
    return "body:" + hashlib.blake2b(body, digest_size=16).hexdigest()


# -- The HTTP receiver, in a process of its own -----------------------------------------


def request_key(headers: Mapping[str, str]) -> str:
    """The event id a request to the receiver carries: Standard Webhooks' `webhook-id`
    (and the baselines'), or an SNS notification's MessageId."""
    return headers.get("webhook-id") or headers.get("x-amz-sns-message-id") or "no id"


async def receive() -> None:
    """Answer every POST /events 200 and keep what it carried; GET /ids lists them, one
    a line. Prints the port, then serves until SIGTERM."""
    keys: list[str] = []

    async def post(request: web.Request) -> web.Response:
        await request.read()
        keys.append(request_key(request.headers))
        return web.Response()

    async def ids(request: web.Request) -> web.Response:
        return web.Response(text="\n".join(keys))

    app = web.Application()
    app.router.add_post("/events", post)
    app.router.add_get("/ids", ids)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


# -- The kinds of destination ------------------------------------------------------------


def text(value: object) -> str:
    """A value a client read, as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` of this machine, if it can be told."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for fds in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                if os.readlink(fd) in inodes:
                    return int(fds.parent.name)
    return None


class Kind:
    """One kind of destination: its configuration, its client's baseline, and reading
    back what reached it. Runs are one at a time; `prepare` names the next one."""

    key: ClassVar[str]

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name = ""

    async def open(self) -> str | None:
        """Connect for setting up and reading back; why the kind cannot run, or None."""
        return None

    def peer(self) -> int | None:
        """The process at the other end (a receiver, a broker), for its CPU time."""
        return None

    def expected_key(self, claimed: Claimed) -> str:
        return claimed.event_id

    def destination(self) -> str:
        """The `[destinations.out]` table for this run, without its header."""
        raise NotImplementedError

    def sections(self) -> str:
        """More of the configuration that the kind needs."""
        return ""

    async def prepare(self, name: str) -> None:
        self.name = name

    async def publish(self, batch: Sequence[Claimed]) -> None:
        """The baseline: the client sends one batch, and has it confirmed."""
        raise NotImplementedError

    async def read_back(self) -> Counter[str]:
        """The keys of what reached the destination in this run, and how often."""
        raise NotImplementedError

    async def drop(self) -> None:
        """Remove what this run made."""

    async def close(self) -> None:
        pass


class FileKind(Kind):
    key = "file-ses"
    format = "ses"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.workdir / f"{self.name}.jsonl"

    def expected_key(self, claimed: Claimed) -> str:
        return body_key(claimed.body)

    def line(self, claimed: Claimed) -> bytes:
        return claimed.body

    def destination(self) -> str:
        return f'type = "file"\npath = "{self.path}"\nformat = "{self.format}"\n'

    async def publish(self, batch: Sequence[Claimed]) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        data = memoryview(b"\n".join(self.line(c) for c in batch) + b"\n")
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def key_of(self, line: bytes) -> str:
        return body_key(line)

    async def read_back(self) -> Counter[str]:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.path.exists():
            return Counter()
        return Counter(self.key_of(line) for line in self.path.read_bytes().splitlines())

    async def drop(self) -> None:
        self.path.unlink(missing_ok=True)


class EnvelopeKind(FileKind):
    key = "file-envelope"
    format = "envelope"

    def expected_key(self, claimed: Claimed) -> str:
        return claimed.event_id

    def line(self, claimed: Claimed) -> bytes:
        return b'{"id":%s,"event":%s}' % (json.dumps(claimed.event_id).encode(), claimed.body)

    def key_of(self, line: bytes) -> str:
        try:
            return str(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            return "unreadable line"


class WebhookKind(Kind):
    key = "webhook"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._receiver: asyncio.subprocess.Process | None = None
        self._port = 0
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> str | None:
        self._session = aiohttp.ClientSession()
        return None

    def peer(self) -> int | None:
        return self._receiver.pid if self._receiver else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/events"

    def destination(self) -> str:
        return f'type = "webhook"\nurl = "{self.url}"\nsecret = "{SECRET}"\n'

    async def prepare(self, name: str) -> None:
        await super().prepare(name)
        command = [sys.executable, "-m", "bench.destinations", "--receive"]
        self._receiver = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=subprocess.PIPE
        )
        assert self._receiver.stdout is not None
        self._port = int(await self._receiver.stdout.readline())

    async def publish(self, batch: Sequence[Claimed]) -> None:
        assert self._session is not None
        for claimed in batch:
            headers = {
                "Content-Type": "application/json",
                "webhook-id": self.expected_key(claimed),
            }
            async with self._session.post(self.url, data=claimed.body, headers=headers) as r:
                r.raise_for_status()

    async def read_back(self) -> Counter[str]:
        assert self._session is not None
        async with self._session.get(f"http://127.0.0.1:{self._port}/ids") as response:
            listing = await response.text()
        return Counter(listing.split("\n")) if listing else Counter()

    async def drop(self) -> None:
        if self._receiver is None:
            return
        self._receiver.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._receiver.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self._receiver.kill()
            await self._receiver.wait()
        self._receiver = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SnsKind(WebhookKind):
    key = "sns"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.key_file, self.certificate = workdir / "sns-key.pem", workdir / "sns-cert.pem"

    def sections(self) -> str:
        return f'[sns]\nkey = "{self.key_file}"\ncertificate = "{self.certificate}"\n'

    def destination(self) -> str:
        return f'type = "sns"\nurl = "{self.url}"\nconfirm = false\n'

    async def open(self) -> str | None:
        config = self.workdir / "sns.toml"
        config.write_text(self.sections())
        key = self.key_file
        command = [sys.executable, "-m", "pixelpost", "sns", "keygen", "-c", str(config)]
        done = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not key.exists():
            why = (done.stderr or done.stdout).strip().splitlines()
            return f"`pixelpost sns keygen` failed: {why[-1] if why else done.returncode}"
        return await super().open()


class NatsKind(Kind):
    key = "nats"
    _client: NatsClient
    _js: JetStreamContext

    async def open(self) -> str | None:
        self._client = NatsClient()
        errors: list[Exception] = []

        async def heard(exc: Exception) -> None:
            errors.append(exc)

        try:
            # As the sender connects: two attempts, then give up (nats-py's fewest).
            await self._client.connect(
                NATS_URL,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=heard,
            )
        except (nats.errors.Error, OSError) as exc:
            why = errors[-1] if errors else exc
            return f"cannot connect to {NATS_URL}: {type(why).__name__}: {why}"
        self._js = self._client.jetstream()
        return None

    def peer(self) -> int | None:
        return listener_pid(4222)

    @property
    def subject(self) -> str:
        return f"bench.{self.name}.{{config_set}}.{{event_type}}"

    def destination(self) -> str:
        return (
            f'type = "nats"\nurl = "{NATS_URL}"\nstream = "{self.name}"\n'
            f'subject = "{self.subject}"\n'
        )

    async def prepare(self, name: str) -> None:
        await super().prepare(name)
        # As the sender creates it; finding it, the sender uses it as it is.
        subjects = [stream_subject(self.subject)]
        config = StreamConfig(name=name, subjects=subjects, duplicate_window=DUPLICATE_WINDOW)
        await self._js.add_stream(config)

    async def publish(self, batch: Sequence[Claimed]) -> None:
        await asyncio.gather(
            *(
                self._js.publish(
                    fill_template(self.subject, c),
                    c.body,
                    stream=self.name,
                    headers={"Nats-Msg-Id": c.event_id},
                )
                for c in batch
            )
        )

    async def read_back(self) -> Counter[str]:
        found: Counter[str] = Counter()
        stored = (await self._js.stream_info(self.name)).state.messages
        subscription = await self._js.subscribe(
            f"bench.{self.name}.>", stream=self.name, ordered_consumer=True
        )
        try:
            for _ in range(stored):
                message = await subscription.next_msg(timeout=READ_BACK_IDLE)
                found[(message.headers or {}).get("Nats-Msg-Id", "no Nats-Msg-Id")] += 1
        finally:
            await subscription.unsubscribe()
        return found

    async def drop(self) -> None:
        await self._js.delete_stream(self.name)

    async def close(self) -> None:
        await self._client.close()


class RedisKind(Kind):
    key = "redis"
    _redis: Redis

    async def open(self) -> str | None:
        self._redis = Redis.from_url(REDIS_URL)
        try:
            await self._redis.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            await self._redis.aclose()
            return f"cannot connect to {REDIS_URL}: {type(exc).__name__}: {exc}"
        return None

    def peer(self) -> int | None:
        return listener_pid(6379)

    @property
    def stream(self) -> str:
        return f"bench:{self.name}"

    def destination(self) -> str:
        return f'type = "redis"\nurl = "{REDIS_URL}"\nstream = "{self.stream}"\n'

    async def publish(self, batch: Sequence[Claimed]) -> None:
        pipeline = self._redis.pipeline(transaction=False)
        for c in batch:
            fields: dict[FieldT, EncodableT] = {"id": c.event_id, "event": c.body}
            pipeline.xadd(self.stream, fields, maxlen=REDIS_MAXLEN, approximate=True)
        await pipeline.execute()

    async def read_back(self) -> Counter[str]:
        found: Counter[str] = Counter()
        start = "-"
        while entries := await self._redis.xrange(self.stream, start, "+", count=5000):
            for _, fields in entries:
                found[text((fields or {}).get(b"id", "no id"))] += 1
            start = "(" + text(entries[-1][0])
        return found

    async def drop(self) -> None:
        await self._redis.delete(self.stream)

    async def close(self) -> None:
        await self._redis.aclose()


class AmqpKind(Kind):
    key = "amqp"
    routing_key = "{config_set}.{event_type}"
    _connection: AbstractConnection
    _channel: AbstractChannel
    _exchange: AbstractExchange
    _queue: AbstractQueue

    async def open(self) -> str | None:
        try:
            self._connection = await aio_pika.connect(AMQP_URL, timeout=5)
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            where = describe_url(AMQP_URL)
            return f"cannot connect to {where}: {type(exc).__name__}: {exc}"
        self._channel = await self._connection.channel(publisher_confirms=True)
        return None

    def peer(self) -> int | None:
        return listener_pid(5672)

    @property
    def exchange(self) -> str:
        return f"bench.{self.name}"

    def destination(self) -> str:
        return (
            f'type = "amqp"\nurl = "{AMQP_URL}"\nexchange = "{self.exchange}"\n'
            f'routing_key = "{self.routing_key}"\n'
        )

    async def prepare(self, name: str) -> None:
        await super().prepare(name)
        # The queue first: a message that no queue takes is refused.
        self._exchange = await self._channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self._channel.declare_queue(self.exchange, durable=True)
        await self._queue.bind(self._exchange, "#")

    async def publish(self, batch: Sequence[Claimed]) -> None:
        await asyncio.gather(
            *(
                self._exchange.publish(
                    aio_pika.Message(
                        c.body,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=c.event_id,
                        type=c.event_type.value,
                    ),
                    routing_key=fill_template(self.routing_key, c),
                    mandatory=True,
                )
                for c in batch
            )
        )

    async def read_back(self) -> Counter[str]:
        found: Counter[str] = Counter()
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=2000)
            queue = await channel.declare_queue(self.exchange, passive=True)
            stored = queue.declaration_result.message_count or 0
            async with queue.iterator(no_ack=True) as messages:
                for _ in range(stored):
                    message = await asyncio.wait_for(anext(messages), READ_BACK_IDLE)
                    found[message.message_id or "no message_id"] += 1
        finally:
            await channel.close()
        return found

    async def drop(self) -> None:
        await self._queue.delete(if_unused=False, if_empty=False)
        await self._exchange.delete()

    async def close(self) -> None:
        await self._connection.close()


KINDS: dict[str, type[Kind]] = {
    kind.key: kind
    for kind in (FileKind, EnvelopeKind, WebhookKind, SnsKind, NatsKind, RedisKind, AmqpKind)
}

# -- Runs ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Run:
    seconds: float
    cpu: float
    """Seconds of CPU of this process over the timed part."""
    peer_cpu: float | None
    """Seconds of CPU of the receiver or the broker over the timed part."""
    missing: int = 0
    unknown: int = 0
    duplicates: int = 0
    failed: int = 0
    """Failed attempts the store counted (pixelpost's side)."""
    stalled: bool = False


@dataclass(kw_only=True)
class Results:
    events: int
    filled: float = 0.0
    shape: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each kind's sender's batch size and batches in flight."""
    pixelpost: dict[str, list[Run]] = field(default_factory=dict)
    client: dict[str, list[Run]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Prepared:
    template: Path
    """The folder of the filled store."""
    payloads: list[Claimed]


def config_text(store: Path, kind: Kind) -> str:
    sets = "".join(
        f'[config_sets.{name}]\ndestinations = ["{DESTINATION}"]\n' for name in CONFIG_SETS
    )
    return f"""
[store]
url = "sqlite:///{store}"
{sets}
[destinations.{DESTINATION}]
{kind.destination()}
{kind.sections()}"""


def routes() -> list[Route]:
    return [
        Route(config_set=name, event_type=event_type, destination=DESTINATION)
        for name in CONFIG_SETS
        for event_type in EventType
    ]


async def prepare(workdir: Path, events: int, results: Results) -> Prepared:
    """Fill the template store; claim every event once from a copy of it, for the
    bodies that the baselines send and the ids every run must deliver."""
    template = workdir / "template"
    store = await SQLiteStore.open(template / "store.db")
    try:
        results.filled, _ = await fill(store, events, time.time())
    finally:
        await store.close()
    probe = workdir / "probe"
    shutil.copytree(template, probe)
    store = await SQLiteStore.open(probe / "store.db")
    try:
        while await store.route(routes(), limit=events):
            pass
        payloads = await store.claim(DESTINATION, limit=events + 1, lease=3600)
    finally:
        await store.close()
    shutil.rmtree(probe)
    payloads.sort(key=lambda c: c.seq)
    return Prepared(template=template, payloads=payloads)


class Delivered:
    """The store's count of events delivered to the destination, read on a connection
    of its own (no queueing behind the dispatcher's transactions)."""

    def __init__(self, store: Path) -> None:
        self._connection = sqlite3.connect(
            f"file:{outbox_path(store)}?mode=ro", uri=True, check_same_thread=False
        )

    def counts(self) -> tuple[int, int]:
        """(delivered, failed attempts)."""
        row = self._connection.execute(
            "SELECT delivered, failed FROM destination_counts WHERE name = ?", (DESTINATION,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def wait(self, expected: int, stall: float) -> bool:
        """Until `expected` are delivered (True), or none more for `stall` seconds."""
        last, since = -1, time.perf_counter()
        while True:
            delivered, _ = await asyncio.to_thread(self.counts)
            if delivered >= expected:
                return True
            now = time.perf_counter()
            if delivered != last:
                last, since = delivered, now
            elif now - since > stall:
                return False
            await asyncio.sleep(POLL)

    def close(self) -> None:
        self._connection.close()


class Stopwatch:
    """Wall time, this process's CPU and the peer's (a receiver's, a broker's) from
    its making to `stop`."""

    def __init__(self, peer: int | None) -> None:
        self._peer = peer
        self._peer_cpu = tree_cpu(peer) if peer is not None else 0.0
        self._cpu = time.process_time()
        self._started = time.perf_counter()

    def stop(self, **flaws: Any) -> Run:
        seconds = time.perf_counter() - self._started
        cpu = time.process_time() - self._cpu
        peer = tree_cpu(self._peer) - self._peer_cpu if self._peer is not None else None
        return Run(seconds=seconds, cpu=cpu, peer_cpu=peer, **flaws)


def checked(run: Run, found: Counter[str], expected: dict[str, str]) -> Run:
    """`run` with what the consumer's side lacks or holds besides."""
    run.missing = sum(1 for key in expected if key not in found)
    run.unknown = sum(n for key, n in found.items() if key not in expected)
    run.duplicates = sum(n - 1 for key, n in found.items() if key in expected and n > 1)
    return run


async def through_pixelpost(
    kind: Kind, prepared: Prepared, name: str, expected: dict[str, str], stall: float
) -> Run:
    """The dispatcher on a copy of the store, until the store counts every event
    delivered; then what reached the destination, read back."""
    folder = kind.workdir / name
    shutil.copytree(prepared.template, folder)
    path = folder / "store.db"
    await kind.prepare(name)
    try:
        config = parse_config_text(config_text(path, kind), environ={})
        store = await SQLiteStore.open(path)
        delivered = Delivered(path)
        try:
            async with aiohttp.ClientSession() as session:
                dispatcher = Dispatcher(
                    config=config,
                    store=store,
                    senders=make_senders(config, session=session, store=store),
                )
                stopwatch = Stopwatch(kind.peer())
                dispatcher.start()
                dispatcher.wake()
                try:
                    done = await delivered.wait(len(prepared.payloads), stall)
                    run = stopwatch.stop(stalled=not done)
                finally:
                    await dispatcher.stop()
            _, run.failed = delivered.counts()
        finally:
            delivered.close()
            await store.close()
        return checked(run, await kind.read_back(), expected)
    finally:
        await kind.drop()
        shutil.rmtree(folder)


async def through_client(
    kind: Kind,
    payloads: Sequence[Claimed],
    name: str,
    shape: tuple[int, int],
    expected: dict[str, str],
) -> Run:
    """The client alone: the same bodies in the sender's batches, as many in flight."""
    batch_size, in_flight = shape
    batches = iter([payloads[i : i + batch_size] for i in range(0, len(payloads), batch_size)])

    async def worker() -> None:
        for batch in batches:
            await kind.publish(batch)

    await kind.prepare(name)
    try:
        stopwatch = Stopwatch(kind.peer())
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        run = stopwatch.stop()
        return checked(run, await kind.read_back(), expected)
    finally:
        await kind.drop()


async def sender_shape(kind: Kind, name: str) -> tuple[int, int]:
    """The batch size and the batches in flight of pixelpost's sender for `kind`."""
    folder = kind.workdir / name
    await kind.prepare(name)
    store = await SQLiteStore.open(folder / "store.db")
    try:
        config: Config = parse_config_text(config_text(folder / "store.db", kind), environ={})
        async with aiohttp.ClientSession() as session:
            sender = make_senders(config, session=session, store=store)[DESTINATION]
            shape = (sender.batch_size, sender.concurrency)
            await sender.close()
    finally:
        await store.close()
        await kind.drop()
        shutil.rmtree(folder)
    return shape


async def open_kinds(keys: Sequence[str], workdir: Path, results: Results) -> list[Kind]:
    kinds: list[Kind] = []
    for key in keys:
        kind = KINDS[key](workdir)
        if (why := await kind.open()) is not None:
            results.skipped[key] = why
            continue
        kinds.append(kind)
    for key, why in results.skipped.items():
        print(f"skipped: {key}: {why}", flush=True)
    return kinds


def describe(run: Run, events: int) -> str:
    flaws = [
        f"{n:,} {what}"
        for n, what in (
            (run.missing, "missing"),
            (run.unknown, "unknown"),
            (run.duplicates, "twice"),
            (run.failed, "failed attempts"),
        )
        if n
    ]
    return (
        f"{events / run.seconds:9,.0f}/s in {run.seconds:5.1f}s, CPU {run.cpu:5.1f}s"
        + (f", peer {run.peer_cpu:5.1f}s" if run.peer_cpu is not None else "")
        + (" (stalled)" if run.stalled else "")
        + (f"; {', '.join(flaws)}" if flaws else "")
    )


async def measure(args: argparse.Namespace) -> Results:
    results = Results(events=args.events)
    tag = f"bench_dest_{os.getpid()}_{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="pixelpost-bench-") as tmp:
        workdir = Path(tmp)
        prepared = await prepare(workdir, args.events, results)
        expected_ids = {c.event_id for c in prepared.payloads}
        print(f"  {len(prepared.payloads):,} events to deliver in each run", flush=True)
        kinds = await open_kinds(args.types, workdir, results)
        try:
            for kind in kinds:
                results.shape[kind.key] = await sender_shape(
                    kind, f"{tag}_{kind.key.replace('-', '_')}_shape"
                )
            for number in range(args.rounds):
                order = kinds if number % 2 == 0 else kinds[::-1]
                for kind in order:
                    expected = {kind.expected_key(c): c.event_id for c in prepared.payloads}
                    sides = ("pixelpost", "client")
                    for side in sides if number % 2 == 0 else sides[::-1]:
                        name = f"{tag}_{kind.key.replace('-', '_')}_{number}_{side}"
                        if side == "pixelpost":
                            run = await through_pixelpost(
                                kind, prepared, name, expected, args.stall
                            )
                            results.pixelpost.setdefault(kind.key, []).append(run)
                        else:
                            run = await through_client(
                                kind, prepared.payloads, name, results.shape[kind.key], expected
                            )
                            results.client.setdefault(kind.key, []).append(run)
                        print(
                            f"round {number + 1}: {kind.key:13} {side:9} "
                            f"{describe(run, len(expected_ids))}",
                            flush=True,
                        )
        finally:
            for kind in kinds:
                await kind.close()
    results.events = len(expected_ids)
    return results


def report(results: Results, args: argparse.Namespace) -> bool:
    """Prints the table and the verdicts; whether every kind that ran met its goal."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    print(
        f"\n{results.events:,} events from one SQLite store (recorded in {results.filled:.1f}s),"
        f" {args.rounds} rounds, {os.cpu_count()} cores; load average at the end {load}"
    )
    print(
        f"{'destination':14} {'batch x':>8} {'pixelpost':>10} {'client':>9} {'ratio':>6} "
        f"{'goal':>6}  {'verdict':8} {'CPU s pp':>8} {'client':>7} {'peer CPU s pp':>13} "
        f"{'client':>7}"
    )

    def rate(run: Run) -> float:
        return results.events / run.seconds

    def peer(runs: list[Run]) -> str:
        values = [r.peer_cpu for r in runs if r.peer_cpu is not None]
        return f"{statistics.median(values):.1f}" if values else "-"

    verdicts: dict[str, str] = {}
    problems: list[str] = []
    for key in args.types:
        if key in results.skipped:
            print(f"{key:14} skipped: {results.skipped[key]}")
            continue
        ours, theirs = results.pixelpost[key], results.client[key]
        mine, base = statistics.median(map(rate, ours)), statistics.median(map(rate, theirs))
        ratio = mine / base
        flaws = []
        for side, runs in (("pixelpost", ours), ("client", theirs)):
            for number, run in enumerate(runs, 1):
                what = f"{key}, {side}, round {number}"
                flaws += [
                    f"{what}: {n:,} {text}"
                    for n, text in (
                        (run.missing, "event ids never arrived"),
                        (run.unknown, "arrivals the store does not hold"),
                        (run.failed, "failed attempts"),
                    )
                    if n
                ]
                if run.stalled:
                    flaws.append(f"{what}: nothing delivered for {args.stall:g}s")
        verdict = verdicts[key] = "INVALID" if flaws else "MET" if ratio >= GOAL else "MISSED"
        problems += flaws
        batch, in_flight = results.shape[key]
        print(
            f"{key:14} {f'{batch}x{in_flight}':>8} {mine:10,.0f} {base:9,.0f} {ratio:5.2f}x "
            f"{GOAL:5.1f}x  {verdict:8} {statistics.median(r.cpu for r in ours):8.1f} "
            f"{statistics.median(r.cpu for r in theirs):7.1f} {peer(ours):>13} {peer(theirs):>7}"
        )
    print(
        "events per second: medians; batch x: the sender's batch size x batches in flight,"
        " the baseline's too;\nCPU s: this process over the timed part (pp: pixelpost's"
        " dispatcher, store and sender); peer: the receiver's or the broker's process"
    )
    print("pixelpost / client, round by round:")
    for key, runs in results.pixelpost.items():
        ratios = [rate(a) / rate(b) for a, b in zip(runs, results.client[key], strict=True)]
        twice = sum(r.duplicates for r in runs)
        print(
            f"  {key:14} "
            + " ".join(f"{r:.2f}x" for r in ratios)
            # At least once, as promised: not a flaw, but worth seeing.
            + (f"  ({twice:,} events delivered more than once)" if twice else "")
        )
    met = sum(verdict == "MET" for verdict in verdicts.values())
    print(
        f"goal: every destination at least {GOAL:.1f}x its client's own rate: {met} of "
        f"{len(verdicts)} met"
        + (f"; skipped: {', '.join(results.skipped)}" if results.skipped else "")
    )
    for problem in problems:
        print(f"INVALID: {problem}")
    return all(verdict == "MET" for verdict in verdicts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--stall", type=float, default=STALL, help="seconds without a delivery to give up"
    )
    parser.add_argument(
        "--types",
        type=lambda text: [key.strip() for key in text.split(",") if key.strip()],
        default=list(KINDS),
        help=f"comma-separated subset of {','.join(KINDS)} (default: all)",
    )
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        asyncio.run(receive())
        return
    if not args.types or any(key not in KINDS for key in args.types):
        parser.error(f"--types: pick from {','.join(KINDS)}")
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    results = asyncio.run(measure(args))
    if not report(results, args):
        sys.exit(1)


if __name__ == "__main__":
    main()
