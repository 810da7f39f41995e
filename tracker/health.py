"""/healthz, /readyz and /metrics over HTTP: routes of the tracker's application, and
the whole of the relay's own listener (`relay.http_listen`).

/healthz is liveness (the process answers); /readyz runs `pixelpost.health`'s checks,
200 when all pass and 503 naming those that failed, one run at a time however many ask.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pixelpost import __version__
from pixelpost.health import Probe, Report, readiness

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers and orchestrators."""
    return web.json_response({"status": "ok", "version": __version__})


class Readyz:
    """/readyz: a request that arrives while the checks run waits for that run, so a
    burst of probes against a locked store costs one set of checks, not one each."""

    def __init__(self, probes: Sequence[Probe]) -> None:
        self._probes = tuple(probes)
        self._running: asyncio.Future[Report] | None = None

    async def view(self, request: web.Request) -> web.Response:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(readiness(self._probes))
        report = await asyncio.shield(self._running)
        return web.json_response(
            {**report.as_json(), "version": __version__},
            status=200 if report.ready else 503,
            headers={"Cache-Control": "no-store"},
        )


def metrics_view(registry: CollectorRegistry) -> Handler:
    """/metrics: `registry` in Prometheus's text format."""

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    return metrics


def add_health(
    app: web.Application, *, registry: CollectorRegistry, probes: Sequence[Probe] | None
) -> None:
    """Route /healthz, /metrics and, given its checks, /readyz."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view(registry))
    if probes is not None:
        app.router.add_get("/readyz", Readyz(probes).view)


def create_health_app(*, registry: CollectorRegistry, probes: Sequence[Probe]) -> web.Application:
    """The relay's own listener: health and metrics, nothing else."""
    app = web.Application()
    add_health(app, registry=registry, probes=probes)
    return app
