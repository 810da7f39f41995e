"""The SMTP side of pixelpost: accept mail from mailers, add tracking, and hand each copy
to delivery.

    frontdoor/    the listener, who may send, reading a message safely, accepting it
    tracking.py   per-recipient copies with their tokens (the rewrite itself is pure:
                  pixelpost.core.rewrite, .mime, .html, .headers)
    outbound/     the spool on disk, the delivery queue and its attempts, the upstream
    replies.py    every SMTP reply the relay gives, named
"""
