"""The HTTP side of pixelpost: the pixel, the click redirects and the event pipeline.

app.py          the aiohttp application factory and its views
server.py       the listening socket and its lifecycle
connections.py  connections at once, in all and per client address
auth.py         the API token and the dashboard's sessions
throttle.py     wrong tokens, counted per client address and in all
"""
