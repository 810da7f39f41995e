"""The tracker's aiohttp application."""

from __future__ import annotations

from aiohttp import web

from pixelpost import __version__
from pixelpost.config import Config

CONFIG_KEY = web.AppKey("config", Config)


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers and orchestrators."""
    return web.json_response({"status": "ok", "version": __version__})


def create_app(config: Config) -> web.Application:
    """The tracker application for `config`."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app.router.add_get("/healthz", healthz)
    return app
