"""The tracker's aiohttp application."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from pixelpost.health import Probe
from pixelpost.store import SuppressionList
from tracker.api import StatsReader, add_api
from tracker.auth import Access
from tracker.dashboard import add_dashboard
from tracker.health import add_health
from tracker.metrics import Metrics
from tracker.sns import SnsViews, add_sns
from tracker.suppression import add_suppression_api
from tracker.unsubscribe import UnsubscribeViews, add_unsubscribe
from tracker.views import Views


def create_app(
    *,
    views: Views,
    metrics: Metrics,
    access: Access,
    stats: StatsReader,
    suppression: SuppressionList,
    probes: Sequence[Probe] | None = None,
    unsubscribe: UnsubscribeViews | None = None,
    sns: SnsViews | None = None,
) -> web.Application:
    """The tracker application: the pixel, the redirects, the unsubscribe page and
    one-click POST (`unsubscribe`), health and metrics, and the statistics API, the
    suppression list's API and the dashboard for holders of `access`'s token, and with
    `sns` the URLs of SNS-compatible destinations' messages. /readyz runs `probes`;
    without them, or without `unsubscribe` or `sns`, as in tests of the other routes,
    there is no /readyz, no /u/, or no /sns/."""
    app = web.Application()
    app.router.add_get("/o/{token}", views.pixel)
    app.router.add_get("/c/{token:.+}", views.click)
    if unsubscribe is not None:
        add_unsubscribe(app, unsubscribe)
    if sns is not None:
        add_sns(app, sns)
    add_health(app, registry=metrics.registry, probes=probes)
    add_api(app, access=access, stats=stats)
    add_suppression_api(app, access=access, suppression=suppression)
    add_dashboard(app, access)
    return app
