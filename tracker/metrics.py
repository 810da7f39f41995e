"""The tracker's Prometheus metrics, in a registry of their own (no global state).

Opens, clicks and latency are counted where they happen. What became of events at
their destinations is read from the store (every few seconds), so that it adds up
whichever process, or how many, delivered them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pixelpost.store import DestinationCounts, Store, StoreError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_INTERVAL = 5.0


class _Destinations(Collector):
    def __init__(self) -> None:
        self.counts: Mapping[str, DestinationCounts] = {}

    def collect(self) -> Iterator[Metric]:
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


class Metrics:
    """Opens, clicks, event deliveries, the outbox and request latency."""

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
            "Opens and clicks answered but not recorded (store down)",
            registry=registry,
        )
        self.latency = Histogram(
            "pixelpost_http_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._destinations = _Destinations()
        registry.register(self._destinations)

    async def refresh(self, store: Store) -> None:
        """Read the destinations' counts from the store."""
        self._destinations.counts = await store.counts()

    async def keep_refreshed(self, store: Store, interval: float = REFRESH_INTERVAL) -> None:
        """Refresh every `interval` seconds, until cancelled."""
        while True:
            try:
                await self.refresh(store)
            except StoreError as exc:
                log.warning("metrics: cannot read destination counts: %s", exc)
            await asyncio.sleep(interval)
