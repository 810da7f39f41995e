"""The HTTP side of pixelpost: the pixel, the click redirects and the event pipeline.

app.py          the aiohttp application factory and its views
server.py       the listening socket and its lifecycle
connections.py  the listener that refuses connections past the limits
                (pixelpost.limits)
auth.py         the API token and the dashboard's sessions, wrong tokens throttled
                (pixelpost.throttle)
"""
