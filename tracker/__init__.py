"""The HTTP side of pixelpost: the pixel, the click redirects, the unsubscribe page and
one-click POST, the statistics API and dashboard, the suppression list's API, health and
metrics. Events it records go to the store; the event pipeline (`pipeline`) delivers
them.

app.py          the aiohttp application factory
views.py        the pixel and the click redirect (the hot paths)
server.py       the listening socket and its lifecycle
connections.py  the listener that refuses connections past the limits
                (pixelpost.core.limits)
auth.py         the API token and the dashboard's sessions, wrong tokens throttled
                (pixelpost.core.throttle)
api.py          the statistics API, and the token check every API route makes
suppression.py  the suppression list's API
unsubscribe.py  /u/<token>: RFC 8058's one-click POST, the page and its buttons
pages.py        the unsubscribe pages' templates (templates/, or `tracker.templates`),
                by Accept-Language
dashboard.py, health.py, metrics.py, client.py
"""
