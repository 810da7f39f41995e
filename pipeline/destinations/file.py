"""File destinations: JSON lines, appended and fsync'd, a batch at a time; each line
the SES event, or (`format = "envelope"`) `{"id": …, "event": …}`, so that a reader can
drop a line that an append after a crash wrote twice. The file system's errors stay in
here."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.destinations.base import DELIVERED, Outcome
from pixelpost.config import FileDestination
from pixelpost.store import Claimed

FILE_BATCH = 500
FILE_RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0, 300.0, 1800.0, 7200.0, 21600.0, 43200.0)


class FileSender:
    """Appends events as JSON lines; the batch is fsync'd before it counts as delivered."""

    concurrency = 1
    batch_size = FILE_BATCH
    retry_delays = FILE_RETRY_DELAYS
    lease = 300.0

    def __init__(self, destination: FileDestination) -> None:
        self.name = destination.name
        self._path = destination.path
        self._envelope = destination.format == "envelope"

    async def close(self) -> None:
        pass  # nothing held between batches

    async def deliver(self, batch: Sequence[Claimed]) -> list[Outcome]:
        try:
            await asyncio.to_thread(self._append, [self._line(claimed) for claimed in batch])
        except OSError as exc:
            failed = Outcome(
                delivered=False, error=f"cannot write {self._path}: {exc.strerror or exc}"
            )
            return [failed] * len(batch)
        return [DELIVERED] * len(batch)

    def _line(self, claimed: Claimed) -> bytes:
        if not self._envelope:
            return claimed.body
        # The event's JSON goes in as it is: no second parse and dump per line.
        return b'{"id":%s,"event":%s}' % (json.dumps(claimed.event_id).encode(), claimed.body)

    def _append(self, bodies: list[bytes]) -> None:
        path: Path = self._path
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            data = memoryview(b"\n".join(bodies) + b"\n")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
