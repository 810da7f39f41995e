"""How events reach each kind of destination: one module per kind, each a `Sender`
(`base`), and `make_sender`, which picks the one a configured destination names.

    webhook   one POST per event, signed as Standard Webhooks asks
    file      JSON lines, appended and fsync'd, a batch at a time

A new kind of destination is a module here, a record in pixelpost.config.records, its
section in the loader, and a branch in `make_sender`.
"""

from __future__ import annotations

import aiohttp

from pipeline.destinations.base import DELIVERED, Outcome, Sender
from pipeline.destinations.file import FileSender
from pipeline.destinations.webhook import WebhookSender, sign
from pixelpost.config import Destination, WebhookDestination

__all__ = ["DELIVERED", "FileSender", "Outcome", "Sender", "WebhookSender", "make_sender", "sign"]


def make_sender(destination: Destination, session: aiohttp.ClientSession) -> Sender:
    """The sender for a configured destination."""
    if isinstance(destination, WebhookDestination):
        return WebhookSender(destination, session)
    return FileSender(destination)
