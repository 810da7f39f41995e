"""The SMTP side of pixelpost: accept mail from mailers, add tracking, and hand each copy
to delivery.

    server.py     the listening socket and its lifecycle (start, graceful stop)
    handler.py    aiosmtpd hooks: who may send, what to do with a message
    access.py     the relay policy (networks today, SMTP AUTH later)
    headers.py    control headers and `Received:` on the raw bytes
    tracking.py   per-recipient copies with their tokens
    rewrite.py    the tracking rewrite of a whole message, spliced into its bytes
    mime.py       MIME structure as byte ranges; transfer encodings
    html.py       links, `ses:*` attributes and the pixel's place in HTML
    delivery.py   the seam between accepting and delivering a message
    upstream.py   transports to the next hop: SMTP (aiosmtplib) or a Maildir
"""
