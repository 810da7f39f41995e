"""The SMTP side of pixelpost: accept mail from mailers, read its configuration set,
and hand it to delivery.

    server.py     the listening socket and its lifecycle (start, graceful stop)
    handler.py    aiosmtpd hooks: who may send, what to do with a message
    access.py     the relay policy (networks today, SMTP AUTH later)
    headers.py    control headers and `Received:` on the raw bytes
    delivery.py   the seam between accepting and delivering a message
    upstream.py   transports to the next hop: SMTP (aiosmtplib) or a Maildir
"""
