"""`pixelpost healthcheck`: ask a running pixelpost's /readyz whether it is ready, for
container and systemd probes. The address comes from the configuration (the tracker's,
or the relay's own listener's), and the answer is one line: what is ready, or what is
not, or that nothing answers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from pixelpost.config import Config, HostPort
from pixelpost.errors import PixelpostError

TIMEOUT_DEFAULT = 5.0
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (mapped away, never bound)


def readyz_url(config: Config, *, relay: bool = False) -> str:
    """Where the process that `config` runs answers /readyz: `tracker.listen`, or with
    `relay`, `relay.http_listen`. A process listening on every address is asked on
    loopback."""
    key = "relay.http_listen" if relay else "tracker.listen"
    listen = config.relay.http_listen if relay else config.tracker.listen
    if listen is None:
        raise PixelpostError(
            "relay.http_listen is not set: the relay answers no HTTP (set it, or ask the "
            "tracker without --relay)"
        )
    if listen.port == 0:
        raise PixelpostError(f"{key} is {listen}: a port picked at each start; give --url")
    asked = HostPort(host=_LOOPBACK.get(listen.host, listen.host), port=listen.port)
    return f"http://{asked}/readyz"


def _unreachable(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def ask(url: str, *, within: float = TIMEOUT_DEFAULT) -> str:
    """The line for a ready process; PixelpostError with the line for anything else."""
    # No proxy from the environment: the process asked is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=within) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise PixelpostError(f"nothing answers at {url}: {_unreachable(exc.reason)}") from None
    except OSError as exc:  # a timeout or reset once connected
        raise PixelpostError(f"nothing answers at {url}: {_unreachable(exc)}") from None
    try:
        answer = json.loads(body)
        checks = answer["checks"]
        ready = status == 200 and answer["status"] == "ready"
        line = (
            ", ".join(f"{name} {check['status']}" for name, check in checks.items())
            if ready
            else "; ".join(f"{name}: {checks[name]['detail']}" for name in answer["failed"])
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PixelpostError(f"{url} answered HTTP {status}, not pixelpost's /readyz") from None
    if not ready:
        raise PixelpostError(f"not ready ({url}): {line or f'HTTP {status}'}")
    return f"ready: {line}"
