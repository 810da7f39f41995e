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
