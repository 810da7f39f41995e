"""The destination types' configuration: every key, its default, and a problem that
names the key and the value for each bad one (a password in a URL never shown)."""

from __future__ import annotations

import pytest

from pixelpost.config import (
    AmqpDestination,
    FileDestination,
    NatsDestination,
    RedisDestination,
    SnsDestination,
    parse_config_text,
)
from pixelpost.core.event_types import EventType
from pixelpost.core.values import describe_url
from pixelpost.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, environ={})
    return list(caught.value.problems)


def test_every_broker_destination_has_working_defaults() -> None:
    config = parse_config_text(
        '[destinations.n]\ntype = "nats"\n[destinations.r]\ntype = "redis"\n'
        '[destinations.a]\ntype = "amqp"\n',
        environ={},
    )
    nats, redis, amqp = (config.destinations[name] for name in "nra")
    assert nats == NatsDestination(name="n", events=frozenset(EventType))
    assert (nats.url, nats.stream, nats.subject) == (
        "nats://127.0.0.1:4222",
        "pixelpost",
        "pixelpost.events.{config_set}.{event_type}",
    )
    assert redis == RedisDestination(name="r", events=frozenset(EventType))
    assert (redis.url, redis.stream, redis.maxlen) == (
        "redis://127.0.0.1:6379/0",
        "pixelpost:events",
        1_000_000,
    )
    assert amqp == AmqpDestination(name="a", events=frozenset(EventType))
    assert (amqp.exchange, amqp.routing_key) == ("pixelpost.events", "{config_set}.{event_type}")
    # A broker that refuses an event is retried sooner than an HTTP endpoint.
    assert nats.retry_delays[0] == 1.0


def test_sns_destination_keys() -> None:
    config = parse_config_text(
        '[destinations.app]\ntype = "sns"\nurl = "https://app.test/ses/"\n'
        'topic_arn = "arn:aws:sns:eu-west-1:123456789012:mail-events"\n'
        'confirm = false\nsignature_version = "1"\nevents = ["bounce", "open"]\ntimeout = "3s"\n'
        '[sns]\nkey = "/etc/pixelpost/sns.key"\ncertificate = "/etc/pixelpost/sns.pem"\n',
        environ={},
    )
    assert config.destinations["app"] == SnsDestination(
        name="app",
        events=frozenset({EventType.BOUNCE, EventType.OPEN}),
        url="https://app.test/ses/",
        topic_arn="arn:aws:sns:eu-west-1:123456789012:mail-events",
        confirm=False,
        signature_version="1",
        timeout=3.0,
    )
    assert str(config.sns.key) == "/etc/pixelpost/sns.key"
    assert str(config.sns.certificate) == "/etc/pixelpost/sns.pem"
    default = parse_config_text(
        '[destinations.hooks]\ntype = "sns"\nurl = "https://app.test/ses/"\n', environ={}
    ).destinations["hooks"]
    assert isinstance(default, SnsDestination)
    assert default.topic_arn == "arn:pixelpost:sns:local:0:hooks"
    assert (default.confirm, default.signature_version) == (True, "2")


def test_file_format() -> None:
    def file(extra: str) -> FileDestination:
        config = parse_config_text(
            f'[destinations.f]\ntype = "file"\npath = "/tmp/e.jsonl"\n{extra}', environ={}
        )
        found = config.destinations["f"]
        assert isinstance(found, FileDestination)
        return found

    assert file("").format == "ses"
    assert file('format = "envelope"').format == "envelope"
    assert problems('[destinations.f]\ntype = "file"\npath = "e"\nformat = "xml"') == [
        'destinations.f.format: "xml" is not one of ses, envelope'
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[destinations.x]\ntype = "kafka"',
            'destinations.x.type: "kafka" is not a destination type '
            "(file, webhook, sns, nats, redis, amqp)",
        ),
        (
            '[destinations.s]\ntype = "sns"\nurl = "ftp://app.test/"',
            'destinations.s.url: "ftp://app.test/" is not an http',
        ),
        (
            '[destinations.s]\ntype = "sns"\nurl = "https://a.test/"\ntopic_arn = "marketing"',
            'destinations.s.topic_arn: "marketing" is not a topic ARN',
        ),
        (
            f'[destinations.s]\ntype = "sns"\nurl = "https://a.test/"\n'
            f'topic_arn = "arn:aws:sns:{"x" * 40}:1:t"',
            'destinations.s.topic_arn: "arn:aws:sns:xxxx',
        ),
        (
            '[destinations.s]\ntype = "sns"\nurl = "https://a.test/"\nsignature_version = 2',
            "destinations.s.signature_version: expected a string, got 2",
        ),
        (
            '[destinations.s]\ntype = "sns"\nurl = "https://a.test/"\nsignature_version = "3"',
            'destinations.s.signature_version: "3" is not one of 1, 2',
        ),
        (
            '[destinations.s]\ntype = "sns"\nurl = "https://a.test/"\nconfirm = "no"',
            'destinations.s.confirm: expected a boolean, got "no"',
        ),
        (
            '[destinations.n]\ntype = "nats"\nurl = "http://127.0.0.1:4222"',
            'destinations.n.url: "http://127.0.0.1:4222" is not a nats:// or tls:// URL',
        ),
        (
            '[destinations.n]\ntype = "nats"\nsubject = "events.{set}"',
            'destinations.n.subject: "events.{set}" names {set}: only {config_set} and '
            "{event_type} are filled in",
        ),
        (
            '[destinations.n]\ntype = "nats"\nsubject = "events..{config_set}"',
            'destinations.n.subject: "events..{config_set}" is not a valid name here',
        ),
        (
            '[destinations.n]\ntype = "nats"\nstream = "my.stream"',
            'destinations.n.stream: "my.stream" is not a stream name',
        ),
        (
            '[destinations.r]\ntype = "redis"\nmaxlen = -1',
            "destinations.r.maxlen: -1 is out of range (it must be >= 0)",
        ),
        (
            '[destinations.r]\ntype = "redis"\nurl = "redis:///0"',
            'destinations.r.url: "redis:///0" is not a redis:// or rediss:// or unix:// URL',
        ),
        (
            '[destinations.a]\ntype = "amqp"\nexchange = "amq.topic"',
            'destinations.a.exchange: "amq.topic" is not an exchange name of ours',
        ),
        (
            '[destinations.a]\ntype = "amqp"\nrouting_key = "{event_type} {config_set}"',
            'destinations.a.routing_key: "{event_type} {config_set}" is not a valid name here',
        ),
        (
            '[destinations.a]\ntype = "amqp"\ntimeout = "0s"',
            'destinations.a.timeout: "0s" is out of range',
        ),
        (
            '[destinations.a]\ntype = "amqp"\nqueue = "events"',
            'destinations.a.queue: unknown key (value "events")',
        ),
        ('[sns]\nkeys = "k.pem"', 'sns.keys: unknown key (value "k.pem")'),
    ],
)
def test_each_problem_names_the_key_and_the_value(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_a_broker_password_never_appears_in_a_problem() -> None:
    found = problems(
        '[destinations.a]\ntype = "amqp"\nurl = "http://guest:s3cr3t@127.0.0.1/"\n'
        '[destinations.r]\ntype = "redis"\nurl = "redis://:s3cr3t@[::1/0"\n'
    )
    assert len(found) == 2, found
    assert "s3cr3t" not in "\n".join(found)
    assert found[0] == (
        'destinations.a.url: "http://guest@127.0.0.1/" is not an amqp:// or amqps:// URL '
        "with a host"
    )
    assert found[1] == 'destinations.r.url: "<secret>" is not a URL'
    config = parse_config_text(
        '[destinations.a]\ntype = "amqp"\nurl = "amqp://app:s3cr3t@mq.internal:5672/vh"\n',
        environ={},
    )
    assert "s3cr3t" not in repr(config)
    unix = parse_config_text(
        '[destinations.r]\ntype = "redis"\nurl = "unix:///run/redis/redis.sock?db=2"\n',
        environ={},
    ).destinations["r"]
    assert isinstance(unix, RedisDestination)
    assert unix.url == "unix:///run/redis/redis.sock?db=2"


def test_urls_are_described_without_their_password() -> None:
    assert describe_url("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest@127.0.0.1:5672/"
    assert describe_url("redis://:pw@[::1]:6379/0?password=x") == "redis://[::1]:6379/0"
    assert describe_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    # NATS reads a user without a password as a token.
    assert describe_url("nats://s3cr3t@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"
    assert describe_url("tls://app:pw@nats.internal") == "tls://app@nats.internal"
    assert describe_url("redis://app@127.0.0.1/0") == "redis://app@127.0.0.1/0"
    assert describe_url("redis://h:99999/") == "<a malformed URL>"
