"""pixelpost: an SMTP relay that adds SES-style open and click tracking to any mailer.

This package holds what the relay and the tracker share (configuration, keys, errors)
and the command line; `relay` and `tracker` depend on it, never the other way round,
except for the CLI, which sits on top of all three.
"""

__version__ = "0.1.0"
