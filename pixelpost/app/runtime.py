"""Assembles the relay, the tracker and the dispatcher from the configuration and runs
them until SIGINT or SIGTERM, then shuts them down in order.

`serve` runs relay, tracker and dispatcher on one event loop; `relay` and `tracker` run
their side. Beside that process: `relay.workers - 1` more relay processes serving this
one's listening sockets and sharing the spool, `tracker.workers - 1` more tracker
processes serving this one's HTTP socket (each with its own store connection and hit
buffer; the dispatcher stays single), and for `tracker` the dispatcher in a niced
process of its own, so that delivering events never competes with answering recipients
for the interpreter. This is the composition root: the one place that knows every
concrete collaborator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.dispatch import Dispatcher, run_dispatcher
from pipeline.jobs import Jobs
from pixelpost import __version__, aio, logs
from pixelpost.app.dkim_keys import load_dkim_keys
from pixelpost.app.processes import ChildProcess, child_setup, watch_parent
from pixelpost.config import Config, SnsDestination
from pixelpost.core.dkim import Signer
from pixelpost.core.events import Event
from pixelpost.core.suppression import Suppressed
from pixelpost.core.tokens import TokenCodec
from pixelpost.errors import DeliveryError, PixelpostError
from pixelpost.health import Probe, probes_for
from pixelpost.keys import decode_signing_key, load_or_create_api_token, signing_keys
from pixelpost.store import (
    Hit,
    HitBuffer,
    MessageRecord,
    Recorder,
    Store,
    SuppressionList,
    open_store,
    store_description,
)
from pixelpost.store.journal import HitJournal
from relay.frontdoor.access import AccessPolicy
from relay.frontdoor.auth import Accounts
from relay.frontdoor.handler import RelayHandler
from relay.frontdoor.server import Listener, RelayServer
from relay.intake.handler import IntakeHandler
from relay.intake.returns import Copies, Returns
from relay.intake.server import intake_server
from relay.outbound.handoff import SpoolingDelivery
from relay.outbound.queue import DeliveryQueue
from relay.outbound.spool import Spool
from relay.outbound.spool import depth as spool_depth
from relay.outbound.upstream import Transport, open_transport
from relay.tracking import Rewriter, Signing
from tracker.app import create_app
from tracker.auth import Access
from tracker.classifier import classifier_for
from tracker.health import create_health_app
from tracker.metrics import Metrics, RelayMetrics
from tracker.pages import load_pages
from tracker.server import TrackerServer
from tracker.sns import sns_views
from tracker.unsubscribe import UnsubscribeViews
from tracker.views import Views

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the interpreter before others may take it (Python's default
is 5 ms)."""
DISPATCH_NICENESS = 10
"""The dispatcher yields the CPU to the HTTP side: a recipient waits on an answer, a
webhook can wait a moment."""


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
        self,
        *,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> None:
        await self._store.record(messages=messages, events=events, suppressions=suppressions)
        self._notify()

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        committed = self._store.record_hits(hits)
        asyncio.ensure_future(committed).add_done_callback(lambda _: self._notify())
        return committed


def _where(destination: object) -> str:
    """A destination's file, or its endpoint's host alone: a webhook URL's path or
    credentials may be a secret."""
    path = getattr(destination, "path", None)
    if path is not None:
        return str(path)
    url = urlsplit(str(getattr(destination, "url", "")))
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.hostname}{port}/…" if url.hostname else ""


def _banner(config: Config, lines: list[tuple[str, str]]) -> str:
    source = (
        str(config.source)
        if config.source
        else "built-in defaults (no -c, no PIXELPOST_CONFIG, no ./pixelpost.toml)"
    )
    width = max(len(label) for label, _ in lines)
    body = "\n".join(f"  {label.ljust(width)}  {value}" for label, value in lines)
    return f"pixelpost {__version__} running with {source}\n{body}\nPress Ctrl-C to stop.\n"


def _link_lines(config: Config) -> list[tuple[str, str]]:
    """Where the pixel and the links of each configuration set point: the address that
    goes into delivered mail, so a placeholder host shows before it reaches recipients."""
    lines = [("links", config.tracker.public_url)]
    for name, config_set in sorted(config.config_sets.items()):
        if (config_set.open_tracking or config_set.click_tracking) and config_set.tracking_url:
            lines.append((f"links {name}", config_set.tracking_url))
    return lines


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


def spool_counts(path: Path) -> tuple[int, int] | None:
    """The metrics' view of a spool: (messages, of which deferred), None if none."""
    found = spool_depth(path)
    return None if found is None else (found.queued, found.deferred)


def _close_all(listeners: Sequence[Listener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _close_sockets(sockets: Sequence[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


async def _check_upstream(transport: Transport) -> None:
    """Say at once, in one line, when the upstream cannot be reached: mail is still
    accepted, spooled and retried as usual."""
    try:
        await transport.check()
    except DeliveryError as exc:
        log.warning(
            "upstream %s cannot be reached now (%s); mail is accepted, spooled and "
            "retried until it can",
            transport.describe(),
            exc,
        )


async def _stop_all(children: Sequence[ChildProcess]) -> None:
    await asyncio.gather(*(child.stop() for child in children))


def _request_stop(children: Sequence[ChildProcess]) -> None:
    for child in children:
        child.request_stop()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _codec(config: Config) -> TokenCodec:
    keys = signing_keys(config.signing.keys, config.signing.key_file)
    return TokenCodec([decode_signing_key(key) for key in keys])


async def start_relay(
    config: Config,
    stack: contextlib.AsyncExitStack,
    recorder: Recorder,
    *,
    suppression: SuppressionList,
    copies: Copies,
    listeners: Sequence[Listener] = (),
) -> tuple[RelayServer, DeliveryQueue, Transport]:
    """The relay's listener (on `listeners` when a parent process made them), spool and
    delivery queue, stopped by `stack` in order: the listener first (messages being
    handed over may finish), then the deliveries. Copies are checked against
    `suppression` before they go; a notification that reports on one of them finds it
    in `copies`."""
    codec = _codec(config)
    relay = config.relay
    spool = Spool(relay.spool)
    stack.callback(spool.close)
    transport = open_transport(
        config.upstream, local_hostname=relay.hostname, pool_size=relay.concurrency
    )
    stack.push_async_callback(transport.close)
    # Copies are rendered on threads that share the interpreter with the event loop: a
    # shorter switch interval hands the loop the interpreter sooner (a NOOP's median
    # answer during a large fan-out goes from 6.6 ms to 2.8 ms; bench/fanout.py).
    sys.setswitchinterval(SWITCH_INTERVAL)
    keys = load_dkim_keys(config.dkim)
    signing = Signing(signer=Signer(keys) if keys else None, signed_input=config.dkim.signed_input)
    rewriter = Rewriter(codec=codec, signing=signing)
    stack.callback(rewriter.close)
    queue = DeliveryQueue(
        spool=spool,
        transport=transport,
        recorder=recorder,
        suppression=suppression,
        rewriter=rewriter,
        relay=relay,
    )
    await queue.start()
    stack.push_async_callback(queue.stop)
    accounts = Accounts(relay.users)
    returns = Returns(
        config=config,
        codec=codec,
        copies=copies,
        recorder=recorder,
        subscriptions=suppression,
    )
    stack.callback(returns.close)
    handler = RelayHandler(
        config=config,
        access=AccessPolicy(allow_networks=relay.allow_networks),
        delivery=SpoolingDelivery(spool=spool, queue=queue),
        rewriter=rewriter,
        accounts=accounts,
        returns=returns,
    )
    server = RelayServer(config=relay, handler=handler, accounts=accounts, listeners=listeners)
    await server.start()
    stack.push_async_callback(server.stop)
    return server, queue, transport


def _reload_tls(server: RelayServer, children: Sequence[ChildProcess] = ()) -> None:
    """SIGHUP: the relay's certificate again, here and in the further relays."""
    try:
        server.reload_tls()
    except PixelpostError as exc:
        log.error("SIGHUP: %s; keeping the certificate in use", exc)
    for child in children:
        child.send_signal(signal.SIGHUP)


def dispatch_process(config: Config, log_level: int, log_format: logs.LogFormat) -> None:
    """The dispatcher child's entry point."""
    child_setup(log_level, log_format, DISPATCH_NICENESS)

    async def main() -> None:
        async with _signals() as stop:
            watch_parent(stop)
            await run_dispatcher(config, stop)

    aio.run(main(), uvloop=True)


def relay_worker_process(
    config: Config, log_level: int, log_format: logs.LogFormat, listeners: Sequence[Listener]
) -> None:
    """A further relay process's entry point: it serves the parent's listening sockets."""
    child_setup(log_level, log_format)

    async def main() -> None:
        async with _signals() as stop, contextlib.AsyncExitStack() as stack:
            watch_parent(stop)
            store = await open_store(config.store)
            stack.push_async_callback(store.close)
            server, _, _ = await start_relay(
                config, stack, store, suppression=store, copies=store, listeners=listeners
            )
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, _reload_tls, server)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            await stop.wait()

    aio.run(main(), uvloop=False)


async def _start_workers(
    stack: contextlib.AsyncExitStack,
    children: list[ChildProcess],
    service: str,
    *,
    workers: int,
    target: Callable[..., None],
    args: tuple[object, ...],
) -> None:
    """Start `workers - 1` further processes of `service` into `children`, which the
    caller has given to `_stop_all` before starting its own server (so that they are
    waited for after it); `stack` tells them to stop before it stops."""
    children += [
        ChildProcess(name=f"pixelpost {service} {number}", target=target, args=args)
        for number in range(1, workers)
    ]
    for child in children:
        await child.start()
    stack.callback(_request_stop, children)


async def _run_relay(
    config: Config,
    stack: contextlib.AsyncExitStack,
    store: Store,
    recorder: Recorder,
    *,
    log_level: int,
    log_format: logs.LogFormat,
) -> list[tuple[str, str]]:
    """The relay here and `relay.workers - 1` more in child processes; banner lines."""
    workers = config.relay.workers
    children: list[ChildProcess] = []
    # Unwound last: the further relays are waited for after this one has stopped, and
    # were told to stop first (below), so that all of them stop side by side.
    stack.push_async_callback(_stop_all, children)
    server, queue, transport = await start_relay(
        config, stack, recorder, suppression=store, copies=store
    )
    stack.push_async_callback(_cancel, asyncio.create_task(_check_upstream(transport)))
    # The further relays serve this one's sockets: they share its port, and a second
    # installation cannot (it fails to bind, as anything else would).
    listeners = server.listeners() if workers > 1 else []
    stack.callback(_close_all, listeners)
    await _start_workers(
        stack,
        children,
        "relay",
        workers=workers,
        target=relay_worker_process,
        args=(config, log_level, log_format, listeners),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _reload_tls, server, children)
    stack.callback(loop.remove_signal_handler, signal.SIGHUP)
    lines = [("smtp", str(server.address) + (f" ({workers} processes)" if workers > 1 else ""))]
    if server.tls_address is not None:
        lines.append(("smtps", f"{server.tls_address} (implicit TLS)"))
    return [
        *lines,
        ("spool", f"{config.relay.spool} ({queue.depth} waiting)"),
        ("upstream", transport.describe()),
    ]


async def start_intake(
    config: Config,
    stack: contextlib.AsyncExitStack,
    store: Store,
    recorder: Recorder,
) -> tuple[RelayServer, IntakeHandler] | None:
    """The intake's listener (`[intake]`), stopped by `stack`; None when there is none."""
    intake = config.intake
    if intake is None:
        return None
    codec = _codec(config)
    returns = Returns(
        config=config, codec=codec, copies=store, recorder=recorder, subscriptions=store
    )
    stack.callback(returns.close)
    handler = IntakeHandler(domains=config.return_path_domains(), codec=codec, returns=returns)
    server = intake_server(config, intake, handler)
    await server.start()
    stack.push_async_callback(server.stop)
    return server, handler


class IntakeCollector(Collector):
    """The intake's counts on /metrics: returned messages by what they were."""

    def __init__(self, handler: IntakeHandler) -> None:
        self._handler = handler

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "pixelpost_intake_messages",
            "Returned messages taken by the intake, by what they were; forged: return"
            " paths refused because their token does not verify",
            labels=["outcome"],
        )
        for outcome, count in sorted(self._handler.counts.items()):
            family.add_metric([outcome], count)
        yield family


async def start_relay_http(
    config: Config,
    stack: contextlib.AsyncExitStack,
    probes: Sequence[Probe],
    collectors: Sequence[Collector] = (),
) -> TrackerServer:
    """The relay's own HTTP listener (`relay.http_listen`): /metrics with its queue, the
    process and `collectors`, /healthz, and /readyz running `probes`; stopped by
    `stack`."""
    assert config.relay.http_listen is not None
    metrics = RelayMetrics()
    for collector in collectors:
        metrics.registry.register(collector)
    refresher = asyncio.create_task(
        metrics.keep_refreshed(functools.partial(spool_counts, config.relay.spool))
    )
    stack.push_async_callback(_cancel, refresher)
    server = TrackerServer(
        app=create_health_app(registry=metrics.registry, probes=probes),
        config=dataclasses.replace(config.tracker, listen=config.relay.http_listen),
        name="relay health",
    )
    await server.start()
    stack.push_async_callback(server.stop)
    return server


def _api_token(config: Config) -> str | None:
    """The token of the API and the dashboard: the configured one, or on the built-in
    defaults one kept in a file beside the signing key (made on the first start), so
    that the dashboard works from the first start."""
    if config.tracker.api_token is None and config.source is None:
        return load_or_create_api_token(_api_token_file(config))
    return config.tracker.api_token


def _api_token_file(config: Config) -> Path:
    return config.signing.key_file.parent / "api-token"


async def start_tracker(
    config: Config,
    stack: contextlib.AsyncExitStack,
    store: Store,
    recorder: Recorder,
    *,
    api_token: str | None,
    probes: Sequence[Probe],
    collectors: Sequence[Collector] = (),
    sockets: Sequence[socket.socket] = (),
) -> TrackerServer:
    """The tracker (pixel, redirects, unsubscribe pages, API and dashboard, /metrics
    with `collectors` too), on `sockets` when a parent process made them, with a hit
    buffer of its own in front of `recorder`; stopped by `stack`."""
    # Read and checked before anything starts: a wrong template stops the start.
    pages = await asyncio.to_thread(load_pages, config.tracker.templates)
    sns = await asyncio.to_thread(sns_views, config, store)
    metrics = Metrics()
    for collector in collectors:
        metrics.registry.register(collector)
    refresher = asyncio.create_task(
        metrics.keep_refreshed(
            store,
            functools.partial(spool_counts, config.relay.spool),
            subscriptions=store if sns is not None else None,
        )
    )
    stack.push_async_callback(_cancel, refresher)
    # Opens and clicks are answered within a bounded time whatever the store does, and
    # once answered are in the store or in the journal, which outlives the process.
    hits = HitBuffer(
        recorder, journal=HitJournal(config.tracker.journal), on_dropped=metrics.unrecorded.inc
    )
    await hits.start()
    stack.push_async_callback(hits.close)
    metrics.buffered.set_function(lambda: hits.held)
    codec = _codec(config)
    views = Views(
        codec=codec,
        recorder=hits,
        trusted_proxies=config.tracker.trusted_proxies,
        anonymize_ip=config.tracker.anonymize_ip,
        metrics=metrics,
        classifier=classifier_for(config.classify),
        delivered_at=store.delivered_at,
    )
    access = Access(api_token, trusted_proxies=config.tracker.trusted_proxies)
    app = create_app(
        views=views,
        metrics=metrics,
        access=access,
        stats=store,
        suppression=store,
        probes=probes,
        unsubscribe=UnsubscribeViews(
            codec=codec, subscriptions=store, pages=pages, metrics=metrics
        ),
        sns=sns,
    )
    server = TrackerServer(app=app, config=config.tracker, sockets=sockets)
    await server.start()
    stack.push_async_callback(server.stop)
    return server


def tracker_worker_process(
    config: Config,
    log_level: int,
    log_format: logs.LogFormat,
    sockets: Sequence[socket.socket],
    relay: bool,
) -> None:
    """A further tracker process's entry point: it serves the parent's listening
    sockets, recording through a store connection of its own. Its /readyz checks what
    the parent's does (`relay`: the relay runs there too), whichever process answers;
    its API token is the parent's (a generated one is in its file by now)."""
    child_setup(log_level, log_format)

    async def main() -> None:
        async with _signals() as stop, contextlib.AsyncExitStack() as stack:
            watch_parent(stop)
            store = await open_store(config.store)
            stack.push_async_callback(store.close)
            await start_tracker(
                config,
                stack,
                store,
                store,
                api_token=_api_token(config),
                probes=probes_for(config, store, relay=relay, tracker=True),
                sockets=sockets,
            )
            _ignore_sighup(stack)
            await stop.wait()

    aio.run(main(), uvloop=True)


async def _run_tracker(
    config: Config,
    stack: contextlib.AsyncExitStack,
    store: Store,
    recorder: Recorder,
    *,
    relay: bool,
    probes: Sequence[Probe],
    collectors: Sequence[Collector] = (),
    log_level: int,
    log_format: logs.LogFormat,
) -> list[tuple[str, str]]:
    """The tracker here and `tracker.workers - 1` more in child processes (`relay`: the
    relay runs in this process too); its banner lines."""
    workers = config.tracker.workers
    children: list[ChildProcess] = []
    # Unwound last: the further trackers are waited for after this one has stopped, and
    # were told to stop first (below), so that all of them stop side by side.
    stack.push_async_callback(_stop_all, children)
    api_token = _api_token(config)
    server = await start_tracker(
        config,
        stack,
        store,
        recorder,
        api_token=api_token,
        probes=probes,
        collectors=collectors,
    )
    # The further trackers serve this one's socket: the kernel hands each new connection
    # to one of them, and a second installation cannot take the port.
    sockets = server.sockets() if workers > 1 else []
    stack.callback(_close_sockets, sockets)
    await _start_workers(
        stack,
        children,
        "tracker",
        workers=workers,
        target=tracker_worker_process,
        args=(config, log_level, log_format, sockets, relay),
    )
    processes = f" ({workers} processes)" if workers > 1 else ""
    lines = [("http", f"http://{server.address}{processes}")]
    if api_token is not None:
        lines.append(("dashboard", f"http://{server.address}/dashboard"))
    if config.tracker.api_token is None and api_token is not None:
        lines.append(("api token", f"{_api_token_file(config)} (for the dashboard's login)"))
    return lines


async def _start_inline_dispatch(
    config: Config, stack: contextlib.AsyncExitStack, store: Store
) -> Recorder:
    """The dispatcher and the periodic jobs on this event loop (`serve`), stopped by
    `stack`; the recorder that wakes the dispatcher whenever something is recorded."""
    import aiohttp  # noqa: PLC0415 (the HTTP client is only needed where it delivers)

    from pipeline.destinations import make_senders  # noqa: PLC0415

    session = await stack.enter_async_context(aiohttp.ClientSession())
    dispatcher = Dispatcher(
        config=config,
        store=store,
        senders=make_senders(config, session=session, store=store),
    )
    dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    jobs = Jobs(store=store, retention_days=config.store.retention_days)
    jobs.start()
    stack.push_async_callback(jobs.stop)
    return NotifyingRecorder(store, dispatcher.wake)


async def _start_dispatch(
    config: Config,
    stack: contextlib.AsyncExitStack,
    store: Store,
    dispatch: Dispatch,
    *,
    log_level: int,
    log_format: logs.LogFormat,
) -> Recorder:
    """Start delivering events where `dispatch` says, before the services that record
    them (so that it stops after them); what those services record through."""
    if dispatch is Dispatch.INLINE:
        return await _start_inline_dispatch(config, stack, store)
    if dispatch is Dispatch.PROCESS:
        child = ChildProcess(
            name="pixelpost dispatch",
            target=dispatch_process,
            args=(config, log_level, log_format),
        )
        await child.start()
        stack.push_async_callback(child.stop)
    return store


def _ignore_sighup(stack: contextlib.AsyncExitStack) -> None:
    """A reload (systemd's ExecReload, a stray kill -HUP) must not end a process that has
    nothing to reload: SIGHUP's default action would."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP: nothing to reload here")
    stack.callback(loop.remove_signal_handler, signal.SIGHUP)


def _setting_lines(config: Config, dispatch: Dispatch) -> list[tuple[str, str]]:
    """The banner's lines after the listeners': where links point, the store, where
    events go (where they are delivered from here) and a generated signing key's file."""
    lines = _link_lines(config)
    lines.append(("store", store_description(config.store)))
    if dispatch is not Dispatch.NONE:
        lines += [(f"destination {name}", _where(d)) for name, d in config.destinations.items()]
    if not config.signing.keys:
        lines.append(("signing key", str(config.signing.key_file)))
    return lines


async def run(
    config: Config,
    *,
    relay: bool = True,
    tracker: bool = True,
    dispatch: Dispatch = Dispatch.INLINE,
    out: TextIO = sys.stdout,
) -> None:
    """Run the chosen services until SIGINT or SIGTERM."""
    log_level = logging.getLogger().getEffectiveLevel()
    log_format = logs.current_format()
    async with _signals() as stop, contextlib.AsyncExitStack() as stack:
        if (tracker or dispatch is not Dispatch.NONE) and any(
            isinstance(d, SnsDestination) for d in config.destinations.values()
        ):
            from pipeline.destinations.sns import read_signing_key  # noqa: PLC0415

            # A bad key stops the start before anything opens, in this process rather
            # than in a dispatcher's of its own.
            await asyncio.to_thread(read_signing_key, config.sns)
        store = await open_store(config.store)
        stack.push_async_callback(store.close)
        recorder = await _start_dispatch(
            config, stack, store, dispatch, log_level=log_level, log_format=log_format
        )
        lines: list[tuple[str, str]] = []
        # Every listener of this process answers /readyz alike: for what runs here.
        probes = probes_for(config, store, relay=relay, tracker=tracker)
        collectors: list[Collector] = []
        if relay:
            lines += await _run_relay(
                config, stack, store, recorder, log_level=log_level, log_format=log_format
            )
            intake = await start_intake(config, stack, store, recorder)
            if intake is not None:
                server, handler = intake
                domains = ", ".join(sorted(config.return_path_domains())) or "no domain"
                lines.append(("intake", f"{server.address} (mail for {domains})"))
                collectors.append(IntakeCollector(handler))
        if relay and config.relay.http_listen is not None:
            relay_http = await start_relay_http(config, stack, probes, collectors)
            lines.append(("relay http", f"http://{relay_http.address} (metrics, health)"))
            collectors = []  # on the relay's /metrics; a registry takes a collector once
        if tracker:
            lines += await _run_tracker(
                config,
                stack,
                store,
                recorder,
                relay=relay,
                probes=probes,
                collectors=collectors,
                log_level=log_level,
                log_format=log_format,
            )
        if not relay:
            _ignore_sighup(stack)
        lines += _setting_lines(config, dispatch)
        lines.append(("event loop", aio.loop_name()))
        out.write(_banner(config, lines))
        out.flush()
        await stop.wait()
        log.info("stopping (signal received)")
    out.write("pixelpost stopped\n")
    out.flush()
