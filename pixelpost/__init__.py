"""pixelpost: an SMTP relay that adds SES-style open and click tracking to any mailer.

    core/     the pure logic: no sockets, files or clocks of its own
    config/, store/, keys, logs, health, errors, aio, files
              what the relay, the tracker and the event pipeline share
    app/      the application shell: the command line and the composition root

Imports run one way, down this list from `app`: `app` imports `relay`, `tracker` and
`pipeline`; they import the shared modules; those import `core`.
"""

__version__ = "0.1.0"
