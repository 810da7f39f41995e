"""The store on PostgreSQL: every role of pixelpost.store.base in one database, shared
by any number of relays, trackers and dispatchers on any machines.

    database.py    the pool, migrations (pixelpost/store/migrations/postgresql/), advisory
                   locks, transactions retried after a deadlock
    queries.py     every statement, by name
    log.py, outbox.py, statistics.py, retention.py, suppression.py
                   one module per role of the store's seam
    writer.py      the log's group commit
    store.py       `PostgreSQLStore`: all the roles together, and LISTEN for new work

Events are numbered by a sequence, but commits from many processes land out of that
order: routing and counting take their work from queues (a row per event still to
route or to count) rather than from a cursor over the numbers, so that no event is
skipped. Routing and claims skip what another process holds (FOR UPDATE SKIP LOCKED);
the roll-up and retention run in one process at a time (advisory locks).
"""

from pixelpost.store.postgresql.store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
