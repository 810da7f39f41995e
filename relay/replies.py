"""Every SMTP reply the relay gives, named, in the order a session meets them.

A reply's bytes are part of the relay's interface: mailers' bounce handling reads the
enhanced status code (RFC 3463) and people read the text, so each is written once, here.
Where pixelpost replaces one of aiosmtpd's commands (DATA), the replies it takes over
keep aiosmtpd's wording; the ones pixelpost adds carry an enhanced status code, and
`ENHANCED` gives aiosmtpd's own replies one on the way out.

The front door's handlers return these and its `server` pushes them, or writes them
itself before the session starts or after it ends; the hand-off to delivery
(`relay.outbound.handoff`) gives the reply to the message itself.
"""

from __future__ import annotations

# The connection.


def too_many_connections(reason: str) -> str:
    """Instead of the greeting (or after the PROXY header) to a client the connection
    limits refuse, `reason` being theirs; the connection is closed after it."""
    return f"421 4.7.0 {reason.capitalize()}; try again later"


TIMEOUT = "421 4.4.2 Error: timeout exceeded"
"""To a client silent past relay.timeout, before the connection is closed (Postfix's
words)."""
SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing connection"
"""To each connection still open when the relay stops, once the grace period is over."""
COMMAND_FAILED = "501 5.5.4 Syntax error in command or parameters"
"""For any command that raised: in practice, an address aiosmtpd's parser trips over."""

# STARTTLS and AUTH.

TLS_ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"
"""To STARTTLS inside TLS."""
TLS_HANDSHAKE_FAILED = "454 4.7.0 TLS handshake failed"
"""When the handshake after STARTTLS fails."""
AUTH_THROTTLED = "454 4.7.0 Too many failed authentication attempts; try again later"
"""To AUTH from a client address that failed too often lately, without a check."""

# MAIL FROM.

SENDER_OK = "250 2.1.0 Ok"
"""The sender is accepted."""


def bad_sender(problem: str) -> str:
    """To a sender address that is not a mailbox, saying why."""
    return f"501 5.1.7 Bad sender address syntax ({problem})"


def sender_not_allowed(address: str, user: str) -> str:
    """To an authenticated `user` using a sender outside their from_domains."""
    return f"553 5.7.1 <{address}>: sender address not allowed for user {user}"


# RCPT TO.

RECIPIENT_OK = "250 2.1.5 Ok"
"""The recipient is accepted, or was already (one copy each)."""
RELAY_DENIED = "554 5.7.1 Relay access denied"
"""To a client neither in relay.allow_networks nor authenticated."""
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
"""Past relay.max_recipients; the client sends the rest in another transaction."""


def bad_recipient(problem: str) -> str:
    """To a recipient address that is not a mailbox, saying why."""
    return f"501 5.1.3 Bad recipient address syntax ({problem})"


# DATA, before the message: aiosmtpd's words.

NEED_RCPT = "503 Error: need RCPT command"
"""To DATA before any recipient was accepted."""
DATA_SYNTAX = "501 Syntax: DATA"
"""To DATA with an argument."""
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
"""To DATA: the client sends the message."""

# After the message: accepting it is the hand-off's reply (`relay.outbound.handoff`),
# given once the message is safe on disk.


def queued(message_id: str) -> str:
    """The message is in the spool, fsync'd: pixelpost is responsible for it now."""
    return f"250 2.0.0 Ok: queued as {message_id}"


CANNOT_QUEUE = "451 4.3.0 Cannot queue the message now; please try again later"
"""The spool could not take the message (disk full, unwritable); the mailer retries."""

# After the message: refusals.

TOO_MUCH_DATA = "552 5.3.4 Error: Too much mail data"
"""To a message over relay.max_message_bytes, once it was read to its end."""
BARE_NEWLINE = "550 5.5.2 Bare <LF> or <CR> in message text"
"""To a message with a bare LF or CR, with relay.bare_newlines = "reject"."""
NUL_CHARACTER = "550 5.6.0 NUL character in message text"
"""To a message with a NUL byte (and no bare newline), with relay.bare_newlines =
"reject"."""


def unknown_config_set(name: str) -> str:
    """To a message whose control header names a configuration set that is not
    configured."""
    return f'554 5.6.0 Configuration set "{_shown(name)}" does not exist'


def malformed_tag(header: str, entry: str) -> str:
    """To a message whose tag `header` holds an `entry` that is not a message tag."""
    return (
        f'554 5.6.0 {header}: "{_shown(entry)}" is not a message tag (write name=value, '
        "each 1 to 256 letters, digits, _ or -)"
    )


def bad_override(problem: str) -> str:
    """To a message whose per-message tracking control header has a value it does not
    take, or two that contradict each other (`problem` names them)."""
    shown = "".join(c if c.isprintable() else "?" for c in problem)[:200]
    return f"554 5.6.0 {shown}"


def override_without_config_set(header: str) -> str:
    """To a message whose control header turns tracking on without a configuration set
    to track it in."""
    return (
        f"554 5.6.0 {_shown(header)} turns tracking on, but the message has no "
        "configuration set (add X-Config-Set, or set default_config_set)"
    )


# The intake (`relay.intake`): mail that comes back.


NOT_A_RETURN_DOMAIN = "550 5.7.1 Relay access denied: this server takes only returned mail"
"""To a recipient outside the return-path domains: the intake never relays."""
NO_SUCH_RETURN_PATH = "550 5.1.1 No such return path"
"""To a return path whose token does not verify (forged, damaged, or its key retired)."""
REPORT_ACCEPTED = "250 2.0.0 Ok: report taken"
"""The report's events and suppressions are in the store (or there were none to make)."""
REPORT_TOO_SOON = "451 4.3.0 The message reported on is still being sent; try again later"
"""A report on a copy whose delivery is not recorded yet (its upstream bounced at once)."""
CANNOT_TAKE_REPORT = "451 4.3.0 Cannot take the report now; please try again later"
"""The store could not take the report's events; the reporting server retries."""


def signing_not_allowed(domain: str, user: str) -> str:
    """To a message whose From field is in a domain pixelpost signs for (DKIM) but that
    the authenticated user may not send as."""
    return f"553 5.7.1 From address in {domain} not allowed for user {user}"


def _shown(text: str) -> str:
    """What the client wrote, quoted back on one line: unprintable characters become
    `?`, and 64 characters at most."""
    return "".join(c if c.isprintable() else "?" for c in text)[:64]


# aiosmtpd's own replies, as the front door amends them.

ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": (
        "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"
    ),
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 Error: SMTPUTF8 takes no arguments",
}
"""aiosmtpd's replies at MAIL FROM, with the enhanced status code (RFC 3463) that a
mailer's bounce handling reads; pixelpost's own replies carry theirs already."""
AUTH_WITHOUT_MECHANISMS = "250-AUTH"
"""Never sent: aiosmtpd's EHLO line for AUTH when no mechanism is left (the relay has
no accounts), which the handler drops."""
