"""The exceptions pixelpost raises, rooted in one class.

    PixelpostError
    ├── ConfigError            the configuration is invalid (carries one line per problem)
    ├── KeyFileError           the signing key file cannot be read or created
    ├── DkimError              a DKIM key does not load, or is too short
    │                          (pixelpost.core.dkim)
    ├── SnsKeyError            the sns destinations' key or certificate does not load,
    │                          or they do not match (pixelpost.core.sns)
    ├── InvalidToken           a tracking or return-path token does not verify
    │                          (pixelpost.core.tokens)
    └── DeliveryError          the upstream did not take a message
        ├── TemporaryDeliveryError   4xx, timeout or no connection: try again later
        └── PermanentDeliveryError   5xx: the upstream will never take it

Errors from aiosmtplib, aiohttp and the file system are translated into these at the
boundary where they occur, so callers only ever catch pixelpost's own classes.
"""

from __future__ import annotations

from collections.abc import Sequence


class PixelpostError(Exception):
    """Something went wrong in pixelpost."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ConfigError(PixelpostError):
    """The configuration is invalid."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems) or None)


class KeyFileError(PixelpostError):
    """The signing key file cannot be read or created."""


class DeliveryError(PixelpostError):
    """The upstream did not take the message."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{code} {text}")


class TemporaryDeliveryError(DeliveryError):
    """The upstream deferred the message, timed out or could not be reached."""


class PermanentDeliveryError(DeliveryError):
    """The upstream refused the message for good."""
