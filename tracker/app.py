"""The tracker's aiohttp application."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pixelpost import __version__
from tracker.api import StatsReader, add_api
from tracker.auth import Access
from tracker.dashboard import add_dashboard
from tracker.metrics import Metrics
from tracker.views import Views


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers and orchestrators."""
    return web.json_response({"status": "ok", "version": __version__})


def create_app(
    *, views: Views, metrics: Metrics, access: Access, stats: StatsReader
) -> web.Application:
    """The tracker application: the pixel, the redirects, health and metrics, and the
    statistics API and dashboard for holders of `access`'s token."""
    app = web.Application()

    async def metrics_view(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app.router.add_get("/o/{token}", views.pixel)
    app.router.add_get("/c/{token:.+}", views.click)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    add_api(app, access=access, stats=stats)
    add_dashboard(app, access)
    return app
