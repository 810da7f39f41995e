"""The tracker's Prometheus metrics, in a registry of their own (no global state).

Opens, clicks, unsubscribes and latency are counted where they happen. Events by type
(the relay's delivery outcomes among them) and what became of events at their
destinations are read from the store every few seconds, so that they add up whichever
process, or how many, recorded or delivered them, and so are the states of SNS-compatible
destinations' subscriptions; the relay's queue is counted in its spool. A relay-only
process shows its queue alone (`RelayMetrics`); both show the process's own CPU, memory
and file descriptors (`process_*`) and Python's (`python_*`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pixelpost.core.event_types import EventType
from pixelpost.store import DestinationCounts, SnsSubscription, StoreError
from pixelpost.store.base import SubscriptionState

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_INTERVAL = 5.0

SpoolDepth = Callable[[], tuple[int, int] | None]
"""Counts the relay's spool: (messages, of which deferred), None if there is none."""


class CountsReader(Protocol):
    """What the metrics read from the store (`pixelpost.store.Store` has it)."""

    async def counts(self) -> dict[str, DestinationCounts]: ...

    async def event_counts(self) -> dict[EventType, int]: ...


class SubscriptionsReader(Protocol):
    """What the subscription gauge reads from the store (`pixelpost.store.Store` has it)."""

    async def sns_subscriptions(self) -> list[SnsSubscription]: ...


def _queue(spool: tuple[int, int]) -> Metric:
    queue = GaugeMetricFamily(
        "pixelpost_queue_messages", "Messages in the relay's spool", labels=["state"]
    )
    queued, deferred = spool
    queue.add_metric(["waiting"], queued - deferred)
    queue.add_metric(["deferred"], deferred)
    return queue


class _Queue(Collector):
    def __init__(self) -> None:
        self.spool: tuple[int, int] | None = None
        """Messages in the relay's spool: all, and those deferred."""

    def collect(self) -> Iterator[Metric]:
        if self.spool is not None:
            yield _queue(self.spool)


def add_process_metrics(registry: CollectorRegistry) -> None:
    """The process's CPU time, memory, open file descriptors and start time, and the
    interpreter's version and garbage collections, in `registry` (prometheus_client
    puts them in its global registry, which pixelpost does not use)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


SUBSCRIPTION_STATES: tuple[SubscriptionState, ...] = ("pending", "confirmed", "unsubscribed")


class _Destinations(Collector):
    def __init__(self) -> None:
        self.counts: Mapping[str, DestinationCounts] = {}
        self.events: Mapping[EventType, int] = {}
        self.spool: tuple[int, int] | None = None
        """Messages in the relay's spool: all, and those deferred."""
        self.subscriptions: Mapping[str, SubscriptionState] | None = None
        """Each SNS-compatible destination's subscription state; None: not read."""

    def collect(self) -> Iterator[Metric]:
        recorded = CounterMetricFamily(
            "pixelpost_events_recorded", "Events recorded, by type", labels=["type"]
        )
        for event_type, count in sorted(self.events.items(), key=lambda item: item[0].value):
            recorded.add_metric([event_type.value], count)
        yield recorded
        if self.spool is not None:
            yield _queue(self.spool)
        families = (
            (CounterMetricFamily, "pixelpost_events_delivered", "Events delivered", "delivered"),
            (CounterMetricFamily, "pixelpost_events_failed", "Failed delivery attempts", "failed"),
            (
                CounterMetricFamily,
                "pixelpost_events_dead_lettered",
                "Events that became dead letters",
                "dead",
            ),
            (
                GaugeMetricFamily,
                "pixelpost_outbox_depth",
                "Events waiting for delivery",
                "pending",
            ),
        )
        for kind, name, documentation, field in families:
            family = kind(name, documentation, labels=["destination"])
            for destination, counts in sorted(self.counts.items()):
                family.add_metric([destination], getattr(counts, field))
            yield family
        if self.subscriptions is not None:
            yield _subscriptions(self.subscriptions)


def _subscriptions(states: Mapping[str, SubscriptionState]) -> Metric:
    # Every state, 1 for the current one: an alert on `state="confirmed"} == 0` fires
    # for a subscription that never was confirmed as for one that ended.
    gauge = GaugeMetricFamily(
        "pixelpost_sns_subscription",
        "Each SNS-compatible destination's subscription: 1 for its state (pending: its"
        " endpoint has not visited the SubscribeURL yet; unsubscribed: it visited the"
        " UnsubscribeURL), 0 for the others",
        labels=["destination", "state"],
    )
    for destination, current in sorted(states.items()):
        for state in SUBSCRIPTION_STATES:
            gauge.add_metric([destination, state], 1 if state == current else 0)
    return gauge


class Metrics:
    """Opens, clicks, unsubscribes, event deliveries, the outbox and request latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        registry = self.registry
        self.opens = Counter("pixelpost_opens", "Pixel requests recorded", registry=registry)
        self.clicks = Counter("pixelpost_clicks", "Link redirects recorded", registry=registry)
        self.invalid_tokens = Counter(
            "pixelpost_invalid_tokens",
            "Requests with a forged or damaged token",
            ["route"],
            registry=registry,
        )
        self.unrecorded = Counter(
            "pixelpost_hits_unrecorded",
            "Opens and clicks answered but not recorded (store down, hit buffer full)",
            registry=registry,
        )
        self.buffered = Gauge(
            "pixelpost_hits_buffered",
            "Opens and clicks answered and held in memory, not in the store yet",
            registry=registry,
        )
        self.unsubscribes = Counter(
            "pixelpost_unsubscribes",
            "Unsubscribe requests, by source (UnsubscribeHeader: the one-click POST;"
            " UnsubscribeLink: the page's button) and outcome (unsubscribed; already: on"
            " the list in that scope before; failed: the store did not take it, 503)",
            ["source", "outcome"],
            registry=registry,
        )
        self.resubscribes = Counter(
            "pixelpost_resubscribes",
            "Resubscribe requests from the unsubscribe page, by outcome (resubscribed;"
            " unchanged: not unsubscribed in that scope; failed: the store did not take it)",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "pixelpost_http_request_duration_seconds",
            "Time to answer a pixel, link or unsubscribe request, refused tokens included",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._destinations = _Destinations()
        registry.register(self._destinations)
        add_process_metrics(registry)

    async def refresh(
        self,
        store: CountsReader,
        spool_depth: SpoolDepth | None = None,
        *,
        subscriptions: SubscriptionsReader | None = None,
    ) -> None:
        """Read the destinations' and the events' counts from the store, the depth of
        the relay's spool when it is on this machine, and with `subscriptions` (where a
        destination is SNS-compatible) the states of their subscriptions."""
        self._destinations.counts = await store.counts()
        self._destinations.events = await store.event_counts()
        if spool_depth is not None:
            self._destinations.spool = await asyncio.to_thread(spool_depth)
        if subscriptions is not None:
            self._destinations.subscriptions = {
                s.destination: s.state for s in await subscriptions.sns_subscriptions()
            }

    async def keep_refreshed(
        self,
        store: CountsReader,
        spool_depth: SpoolDepth | None = None,
        interval: float = REFRESH_INTERVAL,
        *,
        subscriptions: SubscriptionsReader | None = None,
    ) -> None:
        """Refresh every `interval` seconds, until cancelled (see `_keep_refreshing`)."""
        await _keep_refreshing(
            lambda: self.refresh(store, spool_depth, subscriptions=subscriptions), interval
        )


class RelayMetrics:
    """What a relay-only process shows (`relay.http_listen`): its queue and itself."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._queue = _Queue()
        self.registry.register(self._queue)
        add_process_metrics(self.registry)

    async def refresh(self, spool_depth: SpoolDepth) -> None:
        """Count the relay's spool."""
        self._queue.spool = await asyncio.to_thread(spool_depth)

    async def keep_refreshed(
        self, spool_depth: SpoolDepth, interval: float = REFRESH_INTERVAL
    ) -> None:
        """Refresh every `interval` seconds, until cancelled (see `_keep_refreshing`)."""
        await _keep_refreshing(lambda: self.refresh(spool_depth), interval)


async def _keep_refreshing(refresh: Callable[[], Awaitable[None]], interval: float) -> None:
    """`refresh()` every `interval` seconds, until cancelled. Whatever a refresh fails
    on is logged once for as long as it keeps failing that way (a store down for an
    hour is one line, not 720), and the next refresh is tried all the same."""
    failing: str | None = None
    while True:
        try:
            await refresh()
        except Exception as exc:  # /metrics must outlive anything the store returns
            failure = f"{type(exc).__name__}: {exc}"
            if failure != failing and isinstance(exc, StoreError):
                log.warning("metrics: cannot read counts from the store: %s", exc)
            elif failure != failing:  # not the store's error: where it came from helps
                log.error(
                    "metrics: refreshing the counts failed (%s); /metrics shows the last"
                    " ones read until a refresh works",
                    failure,
                    exc_info=exc,
                )
            failing = failure
        else:
            if failing is not None:
                log.info("metrics: the counts are read from the store again")
            failing = None
        await asyncio.sleep(interval)
