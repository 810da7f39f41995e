"""File system questions that the relay and the command line both ask."""

from __future__ import annotations

import os
from pathlib import Path


def blocking_folder(path: Path) -> Path | None:
    """None when `path` can be written or made here: the nearest folder of it (or above
    it) that exists takes new files. Otherwise that folder, or the file in the way."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    return existing
