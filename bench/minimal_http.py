"""The baseline trackers: minimal aiohttp apps serving the same GIF and a redirect.

    python -m bench.minimal_http PORT [--typical]

Stripped (the default): no access log, the redirect built as a plain Response. With
--typical, the app as it is usually written: logging configured at INFO (so aiohttp
writes its access log), the redirect raised as web.HTTPFound. The typical app is what
reproduces the issue's reference figures (about 8,700 GIFs/s and 5,200 redirects/s);
the stripped one is the strictest baseline there is.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from tracker.views import PIXEL

LOCATION = "https://shop.example.com/sale?a=1&b=2"


def main() -> None:
    typical = "--typical" in sys.argv

    async def pixel(request: web.Request) -> web.Response:
        return web.Response(
            body=PIXEL, content_type="image/gif", headers={"Cache-Control": "no-store"}
        )

    async def click(request: web.Request) -> web.Response:
        if typical:
            raise web.HTTPFound(LOCATION)
        return web.Response(status=302, headers={"Location": LOCATION})

    if typical:
        logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    app = web.Application()
    app.router.add_get("/o/{token}", pixel)
    app.router.add_get("/c/{token:.+}", click)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=logging.getLogger("aiohttp.access") if typical else None,
        print=None,
    )


if __name__ == "__main__":
    main()
