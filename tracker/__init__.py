"""The HTTP side of pixelpost: the pixel, the click redirects and the event pipeline.

app.py      the aiohttp application factory and its views
server.py   the listening socket and its lifecycle
"""
