"""Opens and clicks answered before the store took them, kept on local disk until it
does (the hit buffer's, pixelpost.store.buffer).

Each batch is a file of its own (`<owner>-<n>.hits`, one JSON array of hits), written
to a temporary name, fsync'd, renamed and the folder fsync'd before the recipient is
answered; it is deleted once the store has committed its hits. A process owns its files
through an exclusive lock on `<owner>.owner`, held while it runs: at its start, a
process takes over the files of owners whose lock nobody holds (a tracker that died, even
by SIGKILL), and gives their hits to the store. Only one process can take a dead owner's
files over; a file is deleted right after its hits are committed, so a process killed in
that instant records that one file's hits twice, and nothing is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from pixelpost.core.event_types import EventType
from pixelpost.store.base import Hit

log = logging.getLogger(__name__)

SUFFIX = ".hits"
OWNER_SUFFIX = ".owner"


class Segment:
    """One file of hits."""

    __slots__ = ("count", "path")

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count


def _encode(hits: Sequence[Hit]) -> bytes:
    return json.dumps([[hit.kind.value, *hit[1:]] for hit in hits], separators=(",", ":")).encode()


def _decode(data: bytes) -> list[Hit]:
    return [Hit(EventType(row[0]), *row[1:]) for row in json.loads(data)]


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class HitJournal:
    """The hits of one process that the store has not taken yet, in `folder`. Its
    methods block on the disk: call them on a thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._owner = secrets.token_hex(8)
        self._lock: int | None = None
        self._next = 0

    def open(self) -> None:
        """Make the folder, and take this process's lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.folder / f"{self._owner}{OWNER_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = lock

    def write(self, hits: Sequence[Hit]) -> Segment:
        """Keep `hits` durably: on disk when this returns."""
        self._next += 1
        path = self.folder / f"{self._owner}-{self._next:08d}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            file.write(_encode(hits))
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(path)
        _sync_folder(self.folder)
        return Segment(path, len(hits))

    def done(self, segments: Sequence[Segment]) -> None:
        """The store has committed these segments' hits: forget them."""
        for segment in segments:
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()

    def take_over(self) -> list[tuple[Segment, list[Hit]]]:
        """The hits of owners no process holds the lock of any more, now this one's
        (their files renamed to this owner's names)."""
        found: list[tuple[Segment, list[Hit]]] = []
        for owner_file in sorted(self.folder.glob(f"*{OWNER_SUFFIX}")):
            owner = owner_file.name.removesuffix(OWNER_SUFFIX)
            if owner == self._owner:
                continue
            try:
                lock = os.open(owner_file, os.O_RDWR)
            except FileNotFoundError:
                continue  # taken over by another process meanwhile
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process runs
                found += self._adopt(owner)
                owner_file.unlink(missing_ok=True)
            finally:
                os.close(lock)
        # Batches being written when a process died were never answered: not kept.
        for partial in self.folder.glob("*.tmp"):
            if not partial.name.startswith(self._owner):
                partial.unlink(missing_ok=True)
        return found

    def _adopt(self, owner: str) -> list[tuple[Segment, list[Hit]]]:
        adopted: list[tuple[Segment, list[Hit]]] = []
        for path in sorted(self.folder.glob(f"{owner}-*{SUFFIX}")):
            try:
                hits = _decode(path.read_bytes())
            except (ValueError, TypeError, IndexError) as exc:
                kept = path.with_suffix(".damaged")
                path.rename(kept)
                log.error("hit journal: %s cannot be read, kept as %s: %s", path, kept, exc)
                continue
            self._next += 1
            mine = self.folder / f"{self._owner}-{self._next:08d}{SUFFIX}"
            path.rename(mine)
            adopted.append((Segment(mine, len(hits)), hits))
        if adopted:
            _sync_folder(self.folder)
        return adopted

    def close(self) -> None:
        """Let go of the lock; the files left are the next process's to take over."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        with contextlib.suppress(OSError):
            if not any(self.folder.glob(f"{self._owner}-*{SUFFIX}")):
                (self.folder / f"{self._owner}{OWNER_SUFFIX}").unlink(missing_ok=True)
