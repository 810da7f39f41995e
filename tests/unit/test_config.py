"""Configuration: defaults, the example file, the environment, and one clear line per
problem."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from pixelpost.config import (
    BUILTIN_DEFAULTS,
    FileDestination,
    MaildirUpstream,
    SMTPUpstream,
    WebhookDestination,
    load_config,
    parse_config_text,
)
from pixelpost.core.event_types import EventType
from pixelpost.core.passwords import hash_password
from pixelpost.core.values import (
    format_duration,
    interpolate,
    parse_count,
    parse_duration,
    parse_host_port,
)
from pixelpost.errors import ConfigError
from pixelpost.keys import generate_signing_key

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, environ=environ or {})
    return list(caught.value.problems)


def test_builtin_defaults_are_the_contracts() -> None:
    config = parse_config_text(BUILTIN_DEFAULTS, environ={})

    assert str(config.relay.listen) == "127.0.0.1:2525"
    assert str(config.tracker.listen) == "127.0.0.1:8080"
    assert config.tracker.public_url == "http://127.0.0.1:8080"
    assert config.tracker.header_timeout == 15
    assert (config.tracker.max_connections, config.tracker.max_connections_per_ip) == (500, 50)
    assert config.upstream == MaildirUpstream(url="maildir:./var/outbox", path=Path("var/outbox"))
    assert config.store.kind == "sqlite"
    assert config.store.sqlite_path == Path("var/pixelpost.db")
    assert config.relay.spool == Path("var/spool")
    assert config.signing.key_file == Path("var/signing.key")
    assert config.relay.allow_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.relay.max_message_bytes == 26214400
    assert config.relay.retry_delays == (60, 300, 900, 1800, 3600, 7200, 14400)
    assert config.relay.max_queue_lifetime == 2 * 86400
    assert config.default_config_set == "default"
    assert config.config_sets["default"].open_tracking
    assert config.config_sets["default"].click_tracking
    assert config.destinations["events"] == FileDestination(
        name="events", events=frozenset(EventType), path=Path("var/events.jsonl")
    )


def test_load_without_a_file_uses_pixelpost_toml_or_the_builtin_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, environ={}).source is None

    (tmp_path / "pixelpost.toml").write_text('[relay]\nlisten = "127.0.0.1:2626"\n')
    config = load_config(None, environ={})
    assert config.source == Path("pixelpost.toml")
    assert config.relay.listen.port == 2626


def test_example_file_is_valid_with_an_empty_environment() -> None:
    config = load_config(ROOT / "config.example.toml", environ={})

    assert set(config.config_sets) == {"default", "marketing"}
    # Copied as it is, no set sends its links to a placeholder domain.
    assert config.config_sets["marketing"].tracking_url is None
    assert config.tracking_url(config.config_sets["default"]) == "http://127.0.0.1:8080"
    app = config.destinations["app"]
    assert isinstance(app, WebhookDestination)
    assert app.events == {
        EventType.DELIVERY,
        EventType.BOUNCE,
        EventType.COMPLAINT,
        EventType.OPEN,
        EventType.CLICK,
    }
    assert app.retry_delays[:2] == (5, 300)
    assert app.timeout == 15
    assert config.tracker.api_token is None
    assert isinstance(config.upstream, MaildirUpstream)


def test_example_file_takes_secrets_from_the_environment() -> None:
    key = generate_signing_key()
    text = (ROOT / "config.example.toml").read_text()
    text = text.replace(
        '# keys = ["${PIXELPOST_SIGNING_KEY}"]', 'keys = ["${PIXELPOST_SIGNING_KEY}"]'
    )
    config = parse_config_text(
        text,
        environ={
            "UPSTREAM_URL": "smtp+starttls://mx.example.net",
            "UPSTREAM_USER": "relay",
            "UPSTREAM_PASSWORD": "hunter2",
            "PIXELPOST_API_TOKEN": "t0ken-t0ken-t0ken",
            "PIXELPOST_SIGNING_KEY": key,
        },
    )

    assert config.upstream == SMTPUpstream(
        url="smtp+starttls://mx.example.net",
        security="starttls",
        host="mx.example.net",
        port=587,
        username="relay",
        password="hunter2",
        timeout=60,
    )
    assert config.tracker.api_token == "t0ken-t0ken-t0ken"
    assert config.signing.keys == (key,)
    assert "hunter2" not in repr(config)
    assert key not in repr(config)
    assert "t0ken" not in repr(config)


def test_example_file_documents_every_key_with_a_comment() -> None:
    """Each key (commented-out ones included) has a comment on its line or right above
    it at least once; the commented-out keys are real keys."""
    lines = (ROOT / "config.example.toml").read_text().splitlines()
    table = ""
    documented: dict[str, bool] = {}
    uncommented = []
    for number, line in enumerate(lines):
        text = line.removeprefix("# ").strip()
        header = re.fullmatch(r"\[\[?([a-z_.\"]+)\]\]?", text)
        if header:
            table = re.sub(r"^(config_sets|destinations)\.[a-z_]+", r"\1.*", header[1])
            uncommented.append(text)
            continue
        key = re.match(r"([a-z_]+) = ", text)
        if key is None:
            uncommented.append(line)
            continue
        uncommented.append(text)
        name = f"{table}.{key[1]}".lstrip(".")
        above = lines[number - 1].lstrip()
        commented = " # " in text or (
            above.startswith("#") and not re.match(r"# [a-z_]+ = ", above)
        )
        documented[name] = documented.get(name, False) or commented
    undocumented = [name for name, ok in documented.items() if not ok]
    assert not undocumented
    assert len(documented) > 40
    everything = "\n".join(uncommented).replace(
        "$scrypt$ln=15,r=8,p=1$...", hash_password("x", log2_n=4)
    )
    everything = everything.replace('"${PIXELPOST_SIGNING_KEY}"', f'"{generate_signing_key()}"')
    config = parse_config_text(everything, environ={})
    assert config.relay.tls is not None
    assert config.relay.users[0].from_domains == ("example.com",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("2h", 7200), ("2d", 172800), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["5", "5 minutes", "-1s", "1w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_counts_are_ascii_digits_in_range() -> None:
    assert parse_count("1", low=1, high=1000) == 1
    assert parse_count("1000", low=1, high=1000) == 1000
    # "²" is a digit to str.isdigit, not to int(); int() refuses 4,300 digits
    for text in ("0", "1001", "", "-1", " 5", "5.0", "\u00b2", "\u0665", "9" * 5000):
        with pytest.raises(ValueError, match="not a number from 1 to 1000"):
            parse_count(text, low=1, high=1000)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:25", "127.0.0.1", 25),
        ("[::1]:2525", "::1", 2525),
        ("mx.example:0", "mx.example", 0),
    ],
)
def test_host_port(text: str, host: str, port: int) -> None:
    parsed = parse_host_port(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text", ["localhost", ":25", "host:99999", "::1:25", "[nope]:25", "a b:1"]
)
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a host:port|not an IPv6 address"):
        parse_host_port(text)


def test_interpolation() -> None:
    env = {"USER": "app", "EMPTY": ""}
    assert interpolate("${USER}", env) == ("app", [])
    assert interpolate("x-${USER}-${EMPTY}", env) == ("x-app-", [])
    assert interpolate("${NOPE:-fallback}", env) == ("fallback", [])
    assert interpolate("${NOPE:-}", env) == ("", [])
    assert interpolate("${USER:-fallback}", env) == ("app", [])
    assert interpolate("${NOPE}", env) == ("", ["NOPE"])
    assert interpolate("$USER and ${", env) == ("$USER and ${", [])


def test_three_mistakes_make_three_lines_each_naming_its_key() -> None:
    found = problems(
        """
[relay]
listen = "127.0.0.1:99999"
workers = "two"

[tracker]
listn = "127.0.0.1:8080"
"""
    )

    assert len(found) == 3
    assert found[0].startswith('relay.listen: "127.0.0.1:99999" is not a host:port')
    assert found[1] == 'relay.workers: expected an integer, got "two" (a string)'
    assert found[2] == 'tracker.listn: unknown key (value "127.0.0.1:8080")'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nonsense = 1", "nonsense: unknown key (value 1)"),
        (
            '[store]\nretention_days = 3\n[relay]\nmax_queue_lifetime = "50h"',
            "store.retention_days: 3 days is not a day longer than relay.max_queue_lifetime",
        ),
        (
            '[tracker]\napi_token = "short"',
            'tracker.api_token: "<secret>" is shorter than 16 characters',
        ),
        (
            '[tracker]\napi_token = " 0123456789abcdef0123 "',
            'tracker.api_token: "<secret>" starts or ends with white space',
        ),
        (
            "[relay]\nmax_message_bytes = true",
            "relay.max_message_bytes: expected an integer, got true",
        ),
        (
            '[relay]\nallow_networks = ["10.0.0.1/8"]',
            'relay.allow_networks[0]: "10.0.0.1/8" is not a network',
        ),
        (
            '[relay]\nallow_networks = "10.0.0.0/8"',
            "relay.allow_networks: expected an array of strings",
        ),
        (
            '[relay]\nretry_delays = ["1 minute"]',
            'relay.retry_delays[0]: "1 minute" is not a duration',
        ),
        ("[relay]\nworkers = 0", "relay.workers: 0 is out of range"),
        ('[relay]\nhostname = "bad host"', 'relay.hostname: "bad host" is not a host name'),
        ('[upstream]\nurl = "http://mx"', 'upstream.url: "http://mx" is not an upstream URL'),
        ('[upstream]\nurl = "smtp://u:p@mx"', "upstream.url: "),
        (
            '[upstream]\nurl = "smtp://mx"\nusername = "u"',
            "upstream.password: is required",
        ),
        (
            '[tracker]\npublic_url = "t.example.com"',
            'tracker.public_url: "t.example.com" is not an http',
        ),
        (
            '[tracker]\npublic_url = "https://tracking.bücher.de"',
            'tracker.public_url: "https://tracking.bücher.de" is not a plain ASCII URL',
        ),
        (
            '[tracker]\nheader_timeout = "0s"',
            'tracker.header_timeout: "0s" is out of range (it must be from 100ms to 1h)',
        ),
        (
            '[tracker]\nheader_timeout = "soon"',
            'tracker.header_timeout: "soon" is not a duration',
        ),
        ("[tracker]\nmax_connections = 0", "tracker.max_connections: 0 is out of range"),
        (
            '[tracker]\nmax_connections_per_ip = "50"',
            'tracker.max_connections_per_ip: expected an integer, got "50"',
        ),
        ('[store]\nurl = "mysql://db"', 'store.url: "mysql://db" is not a store URL'),
        ('[signing]\nkeys = ["short"]', 'signing.keys[0]: "<secret>" is'),
        ('default_config_set = "nope"', 'default_config_set: "nope" is not a configuration set'),
        (
            '[config_sets.a]\ndestinations = ["gone"]',
            'config_sets.a.destinations[0]: "gone" is not a destination',
        ),
        ('[config_sets."bad name"]', "config_sets.bad name: the name may only use"),
        (
            '[config_sets.a]\nopen_tracking = "yes"',
            'config_sets.a.open_tracking: expected a boolean, got "yes"',
        ),
        (
            '[destinations.f]\ntype = "file"\npath = "e.jsonl"\nevents = ["opens"]',
            'destinations.f.events[0]: "opens" is not an event type',
        ),
        (
            '[destinations.f]\ntype = "kafka"',
            'destinations.f.type: "kafka" is not a destination type',
        ),
        ('[destinations.f]\ntype = "file"', "destinations.f.path: is required"),
        (
            f'[destinations.w]\ntype = "webhook"\nurl = "ftp://x"\nsecret = "{SECRET}"',
            'destinations.w.url: "ftp://x" is not an http',
        ),
        (
            '[destinations.w]\ntype = "webhook"\nurl = "https://x"\nsecret = "abc"',
            'destinations.w.secret: "<secret>" is not a webhook secret',
        ),
        (
            '[[relay.users]]\nname = "app"\npassword_hash = "plain"',
            'relay.users[0].password_hash: "<secret>" is not a hash',
        ),
        ('[relay.tls]\ncert = "c.pem"', "relay.tls.key: is required"),
        ("[relay]\nlisten = ", "configuration: not valid TOML"),
    ],
)
def test_each_kind_of_problem_names_the_key_and_the_value(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_tracker_workers_from_1_to_256() -> None:
    assert parse_config_text("", environ={}).tracker.workers == 1
    for workers in (1, 4, 256):
        config = parse_config_text(f"[tracker]\nworkers = {workers}", environ={})
        assert config.tracker.workers == workers
    for workers in (0, -1, 257):
        assert problems(f"[tracker]\nworkers = {workers}") == [
            f"tracker.workers: {workers} is out of range (it must be from 1 to 256)"
        ]
    assert problems('[tracker]\nworkers = "2"') == [
        'tracker.workers: expected an integer, got "2" (a string)'
    ]


def test_unset_environment_variable_names_key_and_variable_but_not_the_secret() -> None:
    found = problems(
        '[upstream]\nurl = "smtp://mx"\nusername = "u"\npassword = "${UPSTREAM_PASSWORD}"\n'
    )
    assert found == [
        'upstream.password: environment variable UPSTREAM_PASSWORD is not set (in "<secret>")'
    ]
    found = problems('[relay]\nhostname = "${RELAY_NAME}"\n')
    assert found == [
        'relay.hostname: environment variable RELAY_NAME is not set (in "${RELAY_NAME}")'
    ]


def test_secret_values_never_appear_in_problems() -> None:
    found = problems(
        '[destinations.w]\ntype = "webhook"\nurl = "https://x"\nsecret = "whsec_topsecret!!"\n'
        '[signing]\nkeys = ["also-top-secret"]\n'
        '[store]\nurl = "mysql://user:pa55word@db"\n'
    )
    joined = "\n".join(found)
    assert len(found) == 3
    assert "topsecret" not in joined
    assert "also-top-secret" not in joined
    assert "pa55word" not in joined


def test_upstream_urls() -> None:
    def upstream(url: str) -> object:
        return parse_config_text(f'[upstream]\nurl = "{url}"\n', environ={}).upstream

    plain = upstream("smtp://mx.example.net")
    assert isinstance(plain, SMTPUpstream)
    assert (plain.security, plain.port) == ("opportunistic", 25)
    tls = upstream("smtps://[2001:db8::1]")
    assert isinstance(tls, SMTPUpstream)
    assert (tls.security, tls.host, tls.port) == ("tls", "2001:db8::1", 465)
    submission = upstream("smtp+starttls://mx:2587")
    assert isinstance(submission, SMTPUpstream)
    assert (submission.security, submission.port) == ("starttls", 2587)
    assert upstream("maildir:/srv/mail") == MaildirUpstream(
        url="maildir:/srv/mail", path=Path("/srv/mail")
    )


def test_postgresql_store_and_absolute_sqlite_path() -> None:
    pg = parse_config_text('[store]\nurl = "postgresql://u@127.0.0.1/test"\n', environ={}).store
    assert pg.kind == "postgresql"
    sqlite = parse_config_text('[store]\nurl = "sqlite:////var/lib/pp.db"\n', environ={}).store
    assert sqlite.sqlite_path == Path("/var/lib/pp.db")


def test_relay_users_and_tls() -> None:
    hashed = hash_password("pw", log2_n=4)
    config = parse_config_text(
        f"""
[[relay.users]]
name = "app"
password_hash = "{hashed}"
from_domains = ["Example.COM."]

[[relay.users]]
name = "other"
password_hash = "{hashed}"

[relay.tls]
cert = "c.pem"
key = "k.pem"
listen_tls = "0.0.0.0:465"
""",
        environ={},
    )
    first, second = config.relay.users
    assert (first.name, first.from_domains) == ("app", ("example.com",))
    assert (second.name, second.from_domains) == ("other", None)
    assert config.relay.tls is not None
    assert str(config.relay.tls.listen_tls) == "0.0.0.0:465"
    assert hashed not in repr(config)


def test_health_keys_default_off_and_five_minutes_and_are_checked() -> None:
    defaults = parse_config_text(BUILTIN_DEFAULTS, environ={})
    assert defaults.relay.http_listen is None
    assert defaults.tracker.ready_max_outbox_lag == 300

    config = parse_config_text(
        '[relay]\nhttp_listen = "127.0.0.1:9102"\n[tracker]\nready_max_outbox_lag = "0s"\n',
        environ={},
    )
    assert str(config.relay.http_listen) == "127.0.0.1:9102"
    assert config.tracker.ready_max_outbox_lag == 0
    assert problems(
        '[relay]\nhttp_listen = "9102"\n[tracker]\nready_max_outbox_lag = "31d"\n'
    ) == [
        'relay.http_listen: "9102" is not a host:port (write it like 127.0.0.1:2525 or '
        "[::1]:2525)",
        'tracker.ready_max_outbox_lag: "31d" is out of range (it must be from 0ms to 30d)',
    ]


def test_return_paths_and_the_intake() -> None:
    config = parse_config_text(
        """
[intake]
listen = "0.0.0.0:25"
domains = ["FBL.Example.com"]
[config_sets.marketing]
return_path_domain = "Bounces.Example.com."
suppress_on = ["complaint"]
[config_sets.quiet]
suppress_on = []
[config_sets.plain]
""",
        environ={},
    )
    assert config.intake is not None
    assert str(config.intake.listen) == "0.0.0.0:25"
    assert config.intake.max_message_bytes == 10 * 1024 * 1024
    assert config.return_path_domains() == {"bounces.example.com", "fbl.example.com"}
    sets = config.config_sets
    assert sets["marketing"].return_path_domain == "bounces.example.com"
    assert sets["marketing"].suppress_on == {"complaint"}
    assert sets["quiet"].suppress_on == frozenset()
    assert sets["plain"].suppress_on == {"bounce", "complaint"}
    assert sets["plain"].return_path_domain is None
    assert parse_config_text("", environ={}).intake is None  # off unless configured
    assert parse_config_text(BUILTIN_DEFAULTS, environ={}).intake is not None


def test_return_path_and_intake_problems_name_the_key() -> None:
    assert problems(
        """
[intake]
domains = ["localhost", "a b.example"]
max_message_bytes = 10
[config_sets.x]
return_path_domain = "bounces"
suppress_on = ["bounces"]
"""
    ) == [
        'intake.domains[0]: "localhost" is not a domain name (bounces.example.com)',
        'intake.domains[1]: "a b.example" is not a domain name (bounces.example.com)',
        "intake.max_message_bytes: 10 is out of range (it must be >= 1024)",
        'intake.listen: missing: where the intake listens ("0.0.0.0:25")',
        'config_sets.x.return_path_domain: "bounces" is not a domain name (bounces.example.com)',
        'config_sets.x.suppress_on[0]: "bounces" is not one of bounce, complaint ([] for neither)',
    ]


def test_unsubscribe_settings_per_set_and_their_problems() -> None:
    config = parse_config_text(
        """
[config_sets.news]
unsubscribe = true
unsubscribe_scope = "account"
unsubscribe_override = true
track_text_links = true
[config_sets.plain]
""",
        environ={},
    )
    news, plain = config.config_sets["news"], config.config_sets["plain"]
    assert (news.unsubscribe, news.unsubscribe_scope, news.unsubscribe_override) == (
        True,
        "account",
        True,
    )
    assert news.track_text_links
    assert (plain.unsubscribe, plain.unsubscribe_scope, plain.track_text_links) == (
        False,
        "config_set",
        False,
    )
    assert problems(
        """
[config_sets.x]
unsubscribe = "yes"
unsubscribe_scope = "everything"
track_text_links = 1
"""
    ) == [
        'config_sets.x.unsubscribe: expected a boolean, got "yes" (a string)',
        'config_sets.x.unsubscribe_scope: "everything" is not one of config_set, account',
        "config_sets.x.track_text_links: expected a boolean, got 1 (an integer)",
    ]
