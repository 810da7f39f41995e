"""What `check-config` warns about in a configuration that is valid."""

from __future__ import annotations

from pixelpost.config import parse_config_text
from pixelpost.config.lint import warnings


def test_placeholder_hosts_and_unreachable_links_are_warned_about() -> None:
    config = parse_config_text(
        """
[relay]
hostname = "mail.example.net"
[upstream]
url = "smtp://smtp.example.org"
[tracker]
public_url = "http://localhost:8080"
[config_sets.news]
tracking_url = "https://click.test"
[config_sets.real]
tracking_url = "https://links.pixelpost.dev"
[destinations.app]
type = "webhook"
url = "https://hooks.example.com/in?token=secret-in-query"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
""",
        environ={},
    )

    found = warnings(config)

    assert [line.split(":")[0] for line in found] == [
        "tracker.public_url",
        "config_sets.news.tracking_url",
        "upstream.url",
        "destinations.app.url",
        "relay.hostname",
    ]
    assert "loopback" in found[0]
    assert "on test, a name reserved for examples" in found[1]
    assert not any("secret-in-query" in line for line in found)


def test_a_real_configuration_gets_no_warnings() -> None:
    config = parse_config_text(
        """
[relay]
hostname = "mail.pixelpost.dev"
[upstream]
url = "smtp://10.0.0.25"
[tracker]
public_url = "https://t.pixelpost.dev"
""",
        environ={},
    )

    assert warnings(config) == []


def test_an_unsubscribe_that_is_not_https_or_has_no_mailto_is_warned_about() -> None:
    config = parse_config_text(
        """
[tracker]
public_url = "http://127.0.0.1:8080"
[config_sets.news]
unsubscribe = true
[config_sets.secure]
unsubscribe = true
tracking_url = "https://links.pixelpost.dev"
[config_sets.off]
""",
        environ={},
    )
    found = [line for line in warnings(config) if ".unsubscribe:" in line]
    assert found == [
        "config_sets.news.unsubscribe: its URL would be 'http://127.0.0.1:8080'/u/…, not "
        "https: Gmail and Yahoo honour one-click unsubscribes (RFC 8058) over https only",
        "config_sets.news.unsubscribe: there is no [intake], so the List-Unsubscribe field "
        "offers the URL alone, without a mailto:",
        "config_sets.secure.unsubscribe: there is no [intake], so the List-Unsubscribe "
        "field offers the URL alone, without a mailto:",
    ]
    with_intake = parse_config_text(
        """
[intake]
listen = "127.0.0.1:2526"
domains = ["bounces.pixelpost.dev"]
[config_sets.secure]
unsubscribe = true
tracking_url = "https://links.pixelpost.dev"
""",
        environ={},
    )
    assert not [line for line in warnings(with_intake) if ".unsubscribe:" in line]
