"""The store on SQLite, in two files next to each other:

    pixelpost.db          the log: messages and events, appended to by the relay and the
                          tracker through a group commit, every commit fsync'd
    pixelpost-outbox.db   the outbox: deliveries, routing cursor, counts, written only by
                          the dispatcher and the CLI

Two files, because SQLite has one writer per file: the dispatcher's work then never
holds up an open or a click, and the other way round.
"""

from pixelpost.store.sqlite.store import SQLiteStore, outbox_path

__all__ = ["SQLiteStore", "outbox_path"]
