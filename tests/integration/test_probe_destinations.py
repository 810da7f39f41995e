"""`check-config --connect` reaches each broker and SNS endpoint a configuration names,
on the machine's NATS, Redis and RabbitMQ: it logs in and lets go, declaring nothing,
and says why one failed without its password."""

from __future__ import annotations

from pixelpost.app.probes import probe
from pixelpost.config import parse_config_text
from tests.net import free_port


async def test_brokers_and_sns_endpoints_are_reached() -> None:
    closed = free_port()
    config = parse_config_text(
        f"""
[destinations.nats]
type = "nats"
[destinations.redis]
type = "redis"
[destinations.rabbit]
type = "amqp"
[destinations.refused]
type = "amqp"
url = "amqp://guest:not-the-pw@127.0.0.1:5672/"
[destinations.nobody]
type = "nats"
url = "nats://127.0.0.1:{closed}"
[destinations.django]
type = "sns"
url = "http://127.0.0.1:{closed}/ses/"
""",
        environ={},
    )
    found = {p.key: p for p in await probe(config, seconds=5)}

    for name, said in (
        ("nats", "NATS"),
        ("redis", "Redis answered PING"),
        ("rabbit", "RabbitMQ took the login"),
    ):
        assert found[f"destinations.{name}.url"].ok, found[f"destinations.{name}.url"]
        assert said in found[f"destinations.{name}.url"].detail
    refused = found["destinations.refused.url"]
    assert not refused.ok
    assert refused.detail.startswith("amqp://guest@127.0.0.1:5672/: ACCESS_REFUSED")
    assert "not-the-pw" not in refused.detail
    nobody = found["destinations.nobody.url"]
    assert not nobody.ok
    assert nobody.detail.startswith(f"nats://127.0.0.1:{closed}: ")
    assert not found["destinations.django.url"].ok
