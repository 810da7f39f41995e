"""The event pipeline: events that the relay and the tracker record in the store are
routed into the outbox and delivered to their destinations, at least once.

    dispatch.py      routing, claims, retries and dead letters: the outbox's loop
    destinations/    one module per kind of destination (webhook, file), each a Sender
    jobs.py          beside the dispatcher, not part of it: the statistics roll-up and
                     retention
"""
