"""The intake: the SMTP listener for mail that comes back (delivery status
notifications, complaint reports), and what turns that mail into events."""
