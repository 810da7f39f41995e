"""Advice on a configuration that is valid but probably not what its author meant: a
placeholder host copied from the example, links that recipients cannot reach. Pure:
`check-config` prints these as warnings, and `--connect` adds what it finds on the
network (`pixelpost.app.probes`)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pixelpost.config.records import Config, SMTPUpstream, SnsDestination, WebhookDestination

RESERVED_DOMAINS = ("example.com", "example.net", "example.org", "example", "test", "invalid")
"""Names kept for documentation and testing (RFC 2606, RFC 6761): nobody receives mail
or answers HTTP there."""


def _placeholder(host: str) -> str | None:
    """The reserved domain `host` is in, if any."""
    host = host.lower().rstrip(".")
    for domain in RESERVED_DOMAINS:
        if host == domain or host.endswith(f".{domain}"):
            return domain
    return None


def _loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warnings(config: Config) -> list[str]:
    """One line per doubtful value, naming the key and the value."""
    found: list[str] = []
    links = [("tracker.public_url", config.tracker.public_url)]
    links += [
        (f"config_sets.{name}.tracking_url", config_set.tracking_url)
        for name, config_set in sorted(config.config_sets.items())
        if config_set.tracking_url
    ]
    for key, url in links:
        host = urlsplit(url).hostname or ""
        if domain := _placeholder(host):
            found.append(
                f"{key}: {url!r} is on {domain}, a name reserved for examples: delivered "
                "mail would carry a pixel and links that nobody can reach"
            )
        elif _loopback(host):
            found.append(
                f"{key}: {url!r} is this machine's loopback address: recipients cannot "
                "reach it (fine for trying pixelpost out)"
            )
    if isinstance(config.upstream, SMTPUpstream) and (
        domain := _placeholder(config.upstream.host)
    ):
        found.append(
            f"upstream.url: {config.upstream.url!r} is on {domain}, a name reserved for "
            "examples: no mail would be delivered"
        )
    for name, destination in sorted(config.destinations.items()):
        if isinstance(destination, WebhookDestination):
            host = urlsplit(destination.url).hostname or ""
            if domain := _placeholder(host):
                found.append(
                    f"destinations.{name}.url: the endpoint's host {host!r} is on {domain}, "
                    "a name reserved for examples: its events would end as dead letters"
                )
    found += _sns_warnings(config)
    found += _dkim_warnings(config)
    found += _unsubscribe_warnings(config)
    if domain := _placeholder(config.relay.hostname):
        found.append(
            f"relay.hostname: {config.relay.hostname!r} is on {domain}, a name reserved for "
            "examples: it names this relay in Received headers and SMTP greetings"
        )
    return found


def _unsubscribe_warnings(config: Config) -> list[str]:
    """What keeps a set's unsubscribe from being the one-click kind mailbox providers
    honour (RFC 8058 asks for an https URL), or from having its `mailto:`."""
    found: list[str] = []
    for name, config_set in sorted(config.config_sets.items()):
        if not config_set.unsubscribe:
            continue
        url = config.tracking_url(config_set)
        if urlsplit(url).scheme != "https":
            found.append(
                f"config_sets.{name}.unsubscribe: its URL would be {url!r}/u/…, not https: "
                "Gmail and Yahoo honour one-click unsubscribes (RFC 8058) over https only"
            )
        if config.intake is None:
            found.append(
                f"config_sets.{name}.unsubscribe: there is no [intake], so the "
                "List-Unsubscribe field offers the URL alone, without a mailto:"
            )
    return found


def _dkim_warnings(config: Config) -> list[str]:
    """What `dkim.signed_input` does to mail that arrives signed, when that is harm."""
    dkim = config.dkim
    if dkim.signed_input == "track":
        return [
            'dkim.signed_input: "track" breaks the DKIM signature of every tracked message '
            "that arrives signed: such mail fails DMARC unless pixelpost signs it too "
            '(a key in [dkim.domains] for its From domain); "resign" does that'
        ]
    if dkim.signed_input == "resign" and not dkim.domains:
        return [
            'dkim.signed_input: "resign" removes the signature of tracked mail that arrives '
            "signed, and without [dkim.domains] nothing signs it again"
        ]
    return []


def _sns_warnings(config: Config) -> list[str]:
    """What keeps an SNS-compatible destination's endpoint from taking its messages:
    consumers fetch the SigningCertURL (under tracker.public_url) over https only, and
    an endpoint on a reserved name is nobody's."""
    sns = sorted(
        (name, d) for name, d in config.destinations.items() if isinstance(d, SnsDestination)
    )
    found: list[str] = []
    if sns and urlsplit(config.tracker.public_url).scheme != "https":
        names = ", ".join(name for name, _ in sns)
        found.append(
            f"tracker.public_url: {config.tracker.public_url!r} is not https: the SNS "
            f"messages of {names} name their SigningCertURL and SubscribeURL under it, "
            "and SNS consumers such as django-ses fetch a certificate over https only: they "
            "would refuse every message"
        )
    for name, destination in sns:
        host = urlsplit(destination.url).hostname or ""
        if domain := _placeholder(host):
            found.append(
                f"destinations.{name}.url: the endpoint's host {host!r} is on {domain}, "
                "a name reserved for examples: its subscription would never be confirmed"
            )
    return found
