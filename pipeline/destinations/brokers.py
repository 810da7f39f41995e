"""What the broker senders (`nats`, `redis`, `amqp`) share: how long an unreachable
broker is left alone, a subject or routing key filled in for an event, and a client
library's error text with the URL's password taken out."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.destinations.base import Outcome
from pixelpost.core.retry import next_delay
from pixelpost.core.values import TOKEN_SCHEMES
from pixelpost.store import Claimed

RECONNECT_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""How long an unreachable broker is left alone after each failed batch in a row; the
last repeats until one gets through."""
LEASE_MARGIN = 5.0


class Backoff:
    """The pauses after failed batches in a row, with jitter; reset by one that gets
    through."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self._outages = 0

    def pause(self) -> float:
        """How long to leave the broker alone now: longer with each outage in a row."""
        self._outages += 1
        return next_delay(self._outages, RECONNECT_DELAYS, repeat_last=True, rng=self._rng)

    def reset(self) -> None:
        self._outages = 0

    def settle(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """A batch's outcomes, each unavailable one told to wait the next pause; the
        pauses start over after a batch with none."""
        if not any(outcome.unavailable for outcome in outcomes):
            self.reset()
            return list(outcomes)
        pause = self.pause()
        return [replace(o, retry_after=pause) if o.unavailable else o for o in outcomes]


def fill(template: str, claimed: Claimed) -> str:
    """A subject or routing key for `claimed`: `{config_set}` (`_` for an event whose
    message has none) and `{event_type}` (`delivery`, `open` …) filled in."""
    return template.replace("{config_set}", claimed.config_set or "_").replace(
        "{event_type}", claimed.event_type.config_name
    )


def secrets_in(url: str) -> frozenset[str]:
    """The password a broker URL carries (in its user part or a `password` query
    parameter; for NATS, a token in place of the user), as written and percent-decoded:
    what an error text must never show."""
    parts = urlsplit(url)
    written = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    if parts.scheme in TOKEN_SCHEMES and parts.password is None:
        written.append(parts.username or "")
    return frozenset(s for raw in written for s in (raw, unquote(raw)) if s)


def scrub(text: str, secrets: frozenset[str]) -> str:
    """`text` with every one of `secrets` replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
