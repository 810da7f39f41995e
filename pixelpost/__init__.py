"""pixelpost: an SMTP relay that adds SES-style open and click tracking to any mailer.

    core/     the pure logic: no sockets, no store, no event loop
    config/, store/, keys, logs, health, errors, aio, files
              what the relay, the tracker and the event pipeline share
    app/      the application shell: the command line and the composition root

Imports run one way, down this list from `app`: `app` imports `relay`, `tracker` and
`pipeline`; they import the shared modules; those import `core`. docs/architecture.md
draws it; pyproject.toml's import contracts hold every module to it.
"""

__version__ = "0.1.0"
