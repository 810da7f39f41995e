"""The store on SQLite, in two files next to each other:

    pixelpost.db          the log: messages and events, appended to by the relay and the
                          tracker through a group commit, every commit fsync'd
    pixelpost-outbox.db   the outbox: deliveries, routing cursor, counts, written only by
                          the dispatcher and the CLI

Two files, because SQLite has one writer per file: the dispatcher's work then never
holds up an open or a click, and the other way round.

    database.py    the connections, transactions, checkpoints
    queries.py     every statement, by name
    log.py, outbox.py, statistics.py, retention.py
                   one module per role of the store's seam (pixelpost.store.base)
    writer.py      the log's group commit
    schema.py      connecting and migrating (pixelpost/store/migrations/sqlite/)
    store.py       `SQLiteStore`: all the roles together
"""

from pixelpost.store.sqlite.store import SQLiteStore, outbox_path

__all__ = ["SQLiteStore", "outbox_path"]
