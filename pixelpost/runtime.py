"""Assembles the relay, the tracker and the dispatcher from the configuration and runs
them until SIGINT or SIGTERM, then shuts them down in order.

`serve` runs everything on one event loop. `tracker` runs the HTTP side in its process
and the dispatcher in a child process of its own, so that delivering events (JSON,
files, webhooks) never competes with answering recipients for the interpreter; the
child is restarted if it dies. This is the composition root: the one place that knows
every concrete collaborator.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import TextIO

from pixelpost import __version__
from pixelpost.config import Config
from pixelpost.events import Event
from pixelpost.keys import decode_signing_key, signing_keys
from pixelpost.store import Hit, MessageRecord, Recorder, Store, open_store
from pixelpost.tokens import TokenCodec
from relay.access import AccessPolicy
from relay.delivery import ForwardingDelivery
from relay.handler import RelayHandler
from relay.server import RelayServer
from relay.upstream import open_transport
from tracker.app import create_app
from tracker.dispatch import Dispatcher, run_dispatcher
from tracker.metrics import Metrics
from tracker.server import TrackerServer
from tracker.views import Views

log = logging.getLogger(__name__)

DISPATCH_STOP_GRACE = 20.0
DISPATCH_RESTART_DELAY = 1.0


class Dispatch(enum.Enum):
    """Where events are delivered from."""

    INLINE = "inline"
    """On the same event loop (`serve`: one process does it all)."""
    PROCESS = "process"
    """In a child process (`tracker`)."""
    NONE = "none"
    """Not here (`relay`: a tracker delivers what the relay records)."""


class NotifyingRecorder:
    """Records in the store, then tells the dispatcher there is something to route."""

    def __init__(self, store: Store, notify: Callable[[], None]) -> None:
        self._store = store
        self._notify = notify

    async def record(
        self, *, messages: Sequence[MessageRecord] = (), events: Sequence[Event] = ()
    ) -> None:
        await self._store.record(messages=messages, events=events)
        self._notify()

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        committed = self._store.record_hits(hits)
        asyncio.ensure_future(committed).add_done_callback(lambda _: self._notify())
        return committed


def _banner(config: Config, lines: list[tuple[str, str]]) -> str:
    source = (
        str(config.source) if config.source else "built-in defaults (no -c, no ./pixelpost.toml)"
    )
    width = max(len(label) for label, _ in lines)
    body = "\n".join(f"  {label.ljust(width)}  {value}" for label, value in lines)
    return f"pixelpost {__version__} running with {source}\n{body}\nPress Ctrl-C to stop.\n"


@contextlib.asynccontextmanager
async def _signals() -> AsyncIterator[asyncio.Event]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


DISPATCH_NICENESS = 10
"""The dispatcher child yields the CPU to the HTTP side: a recipient waits on an
answer, a webhook can wait a moment."""


def dispatch_process(config: Config, log_level: int) -> None:
    """The dispatcher child's entry point."""
    os.nice(DISPATCH_NICENESS)
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    async def main() -> None:
        async with _signals() as stop:
            # A parent that dies, even by SIGKILL, takes its dispatcher along.
            parent = multiprocessing.parent_process()
            if parent is not None:
                asyncio.get_running_loop().add_reader(parent.sentinel, stop.set)
            await run_dispatcher(config, stop)

    asyncio.run(main())


class _DispatchChild:
    """Keeps a dispatcher child process running until stopped."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self) -> None:
        process = self._context.Process(
            target=dispatch_process,
            args=(self._config, logging.getLogger().getEffectiveLevel()),
            name="pixelpost dispatch",
        )
        process.start()
        self._process = process

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        self._supervisor = asyncio.create_task(self._supervise(), name="dispatch supervisor")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(DISPATCH_RESTART_DELAY)
            process = self._process
            if process is not None and not process.is_alive() and not self._stopping:
                log.error("dispatcher process exited with %s; starting it again", process.exitcode)
                await asyncio.to_thread(self._spawn)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        process = self._process
        if process is None or not process.is_alive():
            return
        process.terminate()
        await asyncio.to_thread(process.join, DISPATCH_STOP_GRACE)
        if process.is_alive():
            log.warning(
                "dispatcher process did not stop in %.0fs; killing it", DISPATCH_STOP_GRACE
            )
            process.kill()
            await asyncio.to_thread(process.join)


async def run(
    config: Config,
    *,
    relay: bool = True,
    tracker: bool = True,
    dispatch: Dispatch = Dispatch.INLINE,
    out: TextIO = sys.stdout,
) -> None:
    """Run the chosen services until SIGINT or SIGTERM."""
    async with _signals() as stop, contextlib.AsyncExitStack() as stack:
        keys = signing_keys(config.signing.keys, config.signing.key_file)
        codec = TokenCodec([decode_signing_key(key) for key in keys])
        store = await open_store(config.store)
        stack.push_async_callback(store.close)
        lines: list[tuple[str, str]] = []
        recorder: Recorder = store
        if dispatch is Dispatch.INLINE:
            import aiohttp  # noqa: PLC0415 (the HTTP client is only needed where it delivers)

            from tracker.destinations import make_sender  # noqa: PLC0415

            session = await stack.enter_async_context(aiohttp.ClientSession())
            dispatcher = Dispatcher(
                config=config,
                store=store,
                senders={name: make_sender(d, session) for name, d in config.destinations.items()},
            )
            dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
            recorder = NotifyingRecorder(store, dispatcher.wake)
        elif dispatch is Dispatch.PROCESS:
            child = _DispatchChild(config)
            await child.start()
            stack.push_async_callback(child.stop)
        if relay:
            transport = open_transport(config.upstream, local_hostname=config.relay.hostname)
            stack.push_async_callback(transport.close)
            handler = RelayHandler(
                config=config,
                access=AccessPolicy(allow_networks=config.relay.allow_networks),
                delivery=ForwardingDelivery(
                    transport=transport, recorder=recorder, hostname=config.relay.hostname
                ),
                codec=codec,
            )
            relay_server = RelayServer(config=config.relay, handler=handler)
            await relay_server.start()
            stack.push_async_callback(relay_server.stop)
            lines += [("smtp", str(relay_server.address)), ("upstream", transport.describe())]
        if tracker:
            metrics = Metrics()
            refresher = asyncio.create_task(metrics.keep_refreshed(store))
            stack.push_async_callback(_cancel, refresher)
            views = Views(
                codec=codec,
                recorder=recorder,
                trusted_proxies=config.tracker.trusted_proxies,
                anonymize_ip=config.tracker.anonymize_ip,
                metrics=metrics,
            )
            tracker_server = TrackerServer(
                app=create_app(views=views, metrics=metrics), listen=config.tracker.listen
            )
            await tracker_server.start()
            stack.push_async_callback(tracker_server.stop)
            lines += [
                ("http", f"http://{tracker_server.address}"),
                ("links", config.tracker.public_url),
            ]
        lines.append(
            ("store", config.store.url if config.store.kind == "sqlite" else "postgresql")
        )
        if dispatch is not Dispatch.NONE:
            lines += [
                (f"events > {name}", str(getattr(d, "path", None) or getattr(d, "url", "")))
                for name, d in config.destinations.items()
            ]
        if not config.signing.keys:
            lines.append(("signing key", str(config.signing.key_file)))
        out.write(_banner(config, lines))
        out.flush()
        await stop.wait()
        log.info("stopping (signal received)")
    out.write("pixelpost stopped\n")
    out.flush()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
