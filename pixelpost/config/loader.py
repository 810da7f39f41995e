"""Reads TOML into the configuration records, collecting every problem on the way.

Problems are gathered rather than raised one at a time so that `check-config` can list
them all, one line each, naming the key and the bad value. The environment is passed in
(never read at import time) so tests can give their own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pixelpost.config.records import (
    AmqpDestination,
    ClassifyConfig,
    ClassifyRule,
    Config,
    ConfigSet,
    Destination,
    DkimConfig,
    DkimDomain,
    FileDestination,
    IntakeConfig,
    MaildirUpstream,
    NatsDestination,
    RedisDestination,
    RelayConfig,
    RelayTLS,
    RelayUser,
    SignedInput,
    SigningConfig,
    SMTPUpstream,
    SnsConfig,
    SnsDestination,
    StoreConfig,
    SuppressOn,
    TrackerConfig,
    UnsubscribeScope,
    Upstream,
    WebhookDestination,
    field_defaults,
)
from pixelpost.core.event_types import ALL, EventType
from pixelpost.core.passwords import check_hash
from pixelpost.core.values import (
    DAY,
    HostPort,
    describe_url,
    format_duration,
    interpolate,
    parse_duration,
    parse_host_port,
    parse_http_url,
    parse_network,
)
from pixelpost.errors import ConfigError
from pixelpost.keys import API_TOKEN_MIN_LENGTH, decode_signing_key, decode_webhook_secret

T = TypeVar("T")
D = TypeVar("D")

CONFIG_ENV: Final = "PIXELPOST_CONFIG"
"""The environment variable naming the configuration file when no `-c` is given."""
DEFAULT_FILE: Final = Path("pixelpost.toml")
"""Read when neither `-c` nor `PIXELPOST_CONFIG` names a file; without it, the built-in
defaults apply."""

BUILTIN_DEFAULTS: Final = """
default_config_set = "default"

[intake]
listen = "127.0.0.1:2526"
domains = ["bounces.localhost"]

[config_sets.default]
destinations = ["events"]

[destinations.events]
type = "file"
path = "./var/events.jsonl"
"""
"""What `pixelpost serve` runs on without a configuration file; every key left out here
takes its documented default."""

# The defaults of keys that no record field holds as written (the URL decides the
# record); every other key's default is its record field's (`field_defaults`).
UPSTREAM_URL_DEFAULT: Final = "maildir:./var/outbox"
STORE_URL_DEFAULT: Final = "sqlite:///./var/pixelpost.db"

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")
_DOMAIN = re.compile(r"[A-Za-z0-9.-]+")
_SMTP_SCHEMES: Final = {
    "smtp": ("opportunistic", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}
_SECRET_SHOWN: Final = '"<secret>"'  # noqa: S105 (a placeholder, not a secret)


def _show(value: object) -> str:
    """A value as it would be written in TOML, for error messages."""
    if isinstance(value, dict):
        return "a table"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return repr(value)


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Missing:
    pass


_MISSING: Final = _Missing()


class _Table:
    """One TOML table being read: every accessor marks its key as known, and problems
    are reported against the key's dotted path."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: list[str],
        environ: Mapping[str, str],
        base: Path | None,
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.environ = environ
        self.base = base
        """The configuration file's folder, which relative paths are read against (None
        for the built-in defaults: the working directory)."""
        self._known: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.key(key)}: {message}")

    def _raw(self, key: str) -> object:
        self._known.add(key)
        return self.data.get(key, _MISSING)

    def _interpolated(self, key: str, value: str, *, secret: bool) -> str | _Missing:
        result, missing = interpolate(value, self.environ)
        for name in missing:
            shown = _SECRET_SHOWN if secret else _show(value)
            self.problem(key, f"environment variable {name} is not set (in {shown})")
        return _MISSING if missing else result

    def _typed(self, key: str, value: object, expected: type, *, secret: bool = False) -> object:
        if isinstance(value, str) and expected is str:
            return self._interpolated(key, value, secret=secret)
        if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
            return value
        shown = _SECRET_SHOWN if secret else _show(value)
        self.problem(key, f"expected {_kind(expected())}, got {shown} ({_kind(value)})")
        return _MISSING

    def get(self, key: str, expected: type[T], default: T, *, secret: bool = False) -> T:
        raw = self._raw(key)
        if isinstance(raw, _Missing):
            return default
        value = self._typed(key, raw, expected, secret=secret)
        return default if isinstance(value, _Missing) else value  # type: ignore[return-value]

    def optional(self, key: str, expected: type[T], *, secret: bool = False) -> T | None:
        return self.get(key, expected, None, secret=secret)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.get(key, int, default)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            self.problem(key, f"{value} is out of range (it must be {bound})")
            return default
        return value

    def duration(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        """A duration from `minimum` to `maximum` seconds."""
        seconds = self.parsed(key, default, parse_duration)
        if not minimum <= seconds <= maximum:
            shown = _show(self.data.get(key, default))
            bound = f"from {format_duration(minimum)} to {format_duration(maximum)}"
            self.problem(key, f"{shown} is out of range (it must be {bound})")
            return default
        return seconds

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A string that must be one of `choices`."""
        value = self.get(key, str, default)
        if value not in choices:
            self.problem(key, f"{_show(value)} is not one of {', '.join(choices)}")
            return default
        return value

    def parsed(self, key: str, default: D, parse: Callable[[str], T]) -> T | D:
        """A string value run through `parse`; a bad one is reported and the default used."""
        text = self.optional(key, str)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as exc:
            self.problem(key, f"{_show(text)} is {exc}")
            return default

    def parsed_optional(self, key: str, parse: Callable[[str], T]) -> T | None:
        """Like `parsed`, for a key without a default: None when absent or bad."""
        return self.parsed(key, None, parse)

    def strings(
        self, key: str, default: Sequence[str], *, secret: bool = False
    ) -> tuple[str, ...]:
        raw = self._raw(key)
        if isinstance(raw, _Missing):
            return tuple(default)
        if not isinstance(raw, list):
            self.problem(key, f"expected an array of strings, got {_show(raw)} ({_kind(raw)})")
            return tuple(default)
        result: list[str] = []
        for index, item in enumerate(raw):
            value = self._typed(f"{key}[{index}]", item, str, secret=secret)
            if isinstance(value, str):
                result.append(value)
        return tuple(result)

    def parsed_list(
        self, key: str, default: tuple[T, ...], parse: Callable[[str], T]
    ) -> tuple[T, ...]:
        """An array of strings, each run through `parse`; a bad one is reported and left
        out. The default when the key is absent or not an array."""
        texts = self.strings(key, ())
        if not isinstance(self.data.get(key), list):
            return default
        result: list[T] = []
        for index, text in enumerate(texts):
            try:
                result.append(parse(text))
            except ValueError as exc:
                self.problem(f"{key}[{index}]", f"{_show(text)} is {exc}")
        return tuple(result)

    def table(self, key: str) -> _Table | None:
        raw = self._raw(key)
        if isinstance(raw, _Missing):
            return None
        if not isinstance(raw, dict):
            self.problem(key, f"expected a table, got {_show(raw)} ({_kind(raw)})")
            return None
        return self._child(raw, self.key(key))

    def section(self, key: str) -> _Table:
        """A table that may be left out (`[relay]`): an empty one then."""
        return self.table(key) or self._child({}, self.key(key))

    def _child(self, data: Mapping[str, Any], path: str) -> _Table:
        return _Table(data, path, self.problems, self.environ, self.base)

    def file(self, key: str, default: Path) -> Path:
        """A path, relative to the configuration file's folder unless absolute."""
        return self.anchored(self.get(key, str, str(default)))

    def anchored(self, value: str) -> Path:
        """`value` as a path, relative to the configuration file's folder unless absolute."""
        path = Path(value).expanduser()
        if self.base is None or path.is_absolute():
            return path
        return Path(os.path.normpath(self.base / path))

    def tables(self, key: str) -> list[_Table]:
        """An array of tables (`[[relay.users]]`)."""
        raw = self._raw(key)
        if isinstance(raw, _Missing):
            return []
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.problem(
                key, f"expected an array of tables ([[{self.key(key)}]]), got {_show(raw)}"
            )
            return []
        return [self._child(item, f"{self.key(key)}[{index}]") for index, item in enumerate(raw)]

    def subtables(self, key: str) -> dict[str, _Table]:
        """A table of named tables (`[config_sets.NAME]`)."""
        outer = self.table(key)
        if outer is None:
            return {}
        result = {}
        for name in outer.data:
            inner = outer.table(name)
            if inner is not None:
                result[name] = inner
        return result

    def finish(self) -> None:
        """Report every key that no accessor asked for."""
        for key in self.data:
            if key not in self._known:
                self.problem(key, f"unknown key (value {_show(self.data[key])})")


def _relay(root: _Table) -> RelayConfig:
    table = root.section("relay")
    hostname = table.get("hostname", str, socket.gethostname())
    if not _HOSTNAME.fullmatch(hostname):
        table.problem("hostname", f"{_show(hostname)} is not a host name")
    users = _relay_users(table)
    tls = _relay_tls(table)
    d = field_defaults(RelayConfig)
    config = RelayConfig(
        listen=table.parsed("listen", d["listen"], parse_host_port),
        hostname=hostname,
        max_message_bytes=table.integer("max_message_bytes", d["max_message_bytes"], minimum=1024),
        allow_networks=table.parsed_list("allow_networks", d["allow_networks"], parse_network),
        spool=table.file("spool", d["spool"]),
        workers=table.integer("workers", d["workers"], minimum=1, maximum=256),
        concurrency=table.integer("concurrency", d["concurrency"], minimum=1, maximum=1000),
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        max_queue_lifetime=table.parsed(
            "max_queue_lifetime", d["max_queue_lifetime"], parse_duration
        ),
        bounce_notifications=table.get("bounce_notifications", bool, d["bounce_notifications"]),
        users=users,
        tls=tls,
        max_recipients=table.integer(
            "max_recipients", d["max_recipients"], minimum=1, maximum=100_000
        ),
        max_connections=table.integer(
            "max_connections", d["max_connections"], minimum=1, maximum=100_000
        ),
        max_connections_per_ip=table.integer(
            "max_connections_per_ip", d["max_connections_per_ip"], minimum=1, maximum=100_000
        ),
        timeout=table.parsed("timeout", d["timeout"], parse_duration),
        bare_newlines=_bare_newlines(table, d["bare_newlines"]),
        proxy_protocol=table.get("proxy_protocol", bool, d["proxy_protocol"]),
        http_listen=table.parsed("http_listen", d["http_listen"], parse_host_port),
    )
    table.finish()
    return config


def _relay_users(table: _Table) -> tuple[RelayUser, ...]:
    """`[[relay.users]]`, each name once: only one of two entries of a name could log in."""
    users = tuple(_relay_user(user) for user in table.tables("users"))
    seen: set[str] = set()
    for index, user in enumerate(users):
        if user.name in seen:
            table.problem(f"users[{index}].name", f"{_show(user.name)} is listed twice")
        seen.add(user.name)
    return users


def _relay_tls(relay: _Table) -> RelayTLS | None:
    """`[relay.tls]`: None without it; with it, the certificate and key are required."""
    table = relay.table("tls")
    if table is None:
        return None
    cert = table.get("cert", str, "")
    key = table.get("key", str, "")
    for name, value in (("cert", cert), ("key", key)):
        if not value:
            table.problem(name, "is required in [relay.tls]")
    tls = RelayTLS(
        cert=table.anchored(cert),
        key=table.anchored(key),
        listen_tls=table.parsed_optional("listen_tls", parse_host_port),
    )
    table.finish()
    return tls


def _bare_newlines(table: _Table, default: str) -> Literal["normalize", "reject"]:
    """`relay.bare_newlines`, narrowed to the record's literal type."""
    choice = table.choice("bare_newlines", ("normalize", "reject"), default)
    return "reject" if choice == "reject" else "normalize"


def _relay_user(table: _Table) -> RelayUser:
    name = table.get("name", str, "")
    if not name:
        table.problem("name", "is required for each [[relay.users]]")
    password_hash = table.get("password_hash", str, "", secret=True)
    try:
        check_hash(password_hash)
    except ValueError as exc:
        table.problem("password_hash", f"{_SECRET_SHOWN} is {exc}")
    from_domains = None
    if "from_domains" in table.data:
        from_domains = tuple(d.lower().rstrip(".") for d in table.strings("from_domains", ()))
        for index, domain in enumerate(from_domains):
            if not _DOMAIN.fullmatch(domain):
                table.problem(f"from_domains[{index}]", f"{_show(domain)} is not a domain")
    table.finish()
    return RelayUser(name=name, password_hash=password_hash, from_domains=from_domains)


def _delays(table: _Table, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if table.data.get(key) == []:
        table.problem(key, "needs at least one delay")
    return table.parsed_list(key, default, parse_duration) or default


def _upstream(root: _Table) -> Upstream:
    table = root.section("upstream")
    url = table.get("url", str, UPSTREAM_URL_DEFAULT)
    username = table.optional("username", str, secret=True) or None
    password = table.optional("password", str, secret=True) or None
    ca_file = table.optional("ca_file", str)
    timeout = table.parsed("timeout", field_defaults(SMTPUpstream)["timeout"], parse_duration)
    table.finish()
    if (username is None) != (password is None) and not any(
        p.startswith(("upstream.username:", "upstream.password:")) for p in table.problems
    ):
        missing = "password" if password is None else "username"
        table.problem(missing, "is required when the other of username and password is set")
    parse = functools.partial(
        _parse_upstream_url,
        username=username,
        password=password,
        ca_file=table.anchored(ca_file) if ca_file else None,
        timeout=timeout,
        anchored=table.anchored,
    )
    try:
        return parse(url)
    except ValueError as exc:
        table.problem("url", f"{_show(url)} is {exc}")
        return parse(UPSTREAM_URL_DEFAULT)


def _parse_upstream_url(
    url: str,
    *,
    username: str | None,
    password: str | None,
    ca_file: Path | None,
    timeout: float,
    anchored: Callable[[str], Path],
) -> Upstream:
    if url.startswith("maildir:"):
        path = url.removeprefix("maildir:").removeprefix("//")
        if not path:
            raise ValueError("not a Maildir URL (write it maildir:PATH)")
        return MaildirUpstream(url=url, path=anchored(path))
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SMTP_SCHEMES:
        raise ValueError(
            "not an upstream URL "
            "(use smtp://, smtp+starttls://, smtps://host:port or maildir:PATH)"
        )
    security, default_port = _SMTP_SCHEMES[scheme]
    netloc = rest.rstrip("/")
    if "/" in netloc or "@" in netloc or "?" in netloc:
        raise ValueError(
            "not an upstream URL (only host and port; credentials go in "
            "upstream.username and upstream.password)"
        )
    address = parse_host_port(
        netloc if re.search(r":\d+$", netloc) else f"{netloc}:{default_port}"
    )
    if address.port == 0:
        raise ValueError("not an upstream URL (port 0)")
    return SMTPUpstream(
        url=url,
        security=security,  # type: ignore[arg-type]
        host=address.host,
        port=address.port,
        username=username,
        password=password,
        ca_file=ca_file,
        timeout=timeout,
    )


def _api_token(table: _Table) -> str | None:
    token = table.optional("api_token", str, secret=True) or None
    if token is None:
        return None
    if token != token.strip():
        table.problem("api_token", f"{_SECRET_SHOWN} starts or ends with white space")
        return None
    if len(token) < API_TOKEN_MIN_LENGTH:
        table.problem(
            "api_token",
            f"{_SECRET_SHOWN} is shorter than {API_TOKEN_MIN_LENGTH} characters "
            "(make one with `openssl rand -hex 32`)",
        )
        return None
    return token


def _tracker(root: _Table) -> TrackerConfig:
    table = root.section("tracker")
    d = field_defaults(TrackerConfig)
    listen = table.parsed("listen", d["listen"], parse_host_port)
    public_url = table.parsed("public_url", parse_http_url(f"http://{listen}"), parse_http_url)
    config = TrackerConfig(
        listen=listen,
        public_url=public_url,
        trusted_proxies=table.parsed_list("trusted_proxies", d["trusted_proxies"], parse_network),
        api_token=_api_token(table),
        anonymize_ip=table.get("anonymize_ip", bool, d["anonymize_ip"]),
        header_timeout=table.duration(
            "header_timeout", d["header_timeout"], minimum=0.1, maximum=3600
        ),
        max_connections=table.integer(
            "max_connections", d["max_connections"], minimum=1, maximum=100_000
        ),
        max_connections_per_ip=table.integer(
            "max_connections_per_ip", d["max_connections_per_ip"], minimum=1, maximum=100_000
        ),
        ready_max_outbox_lag=table.duration(
            "ready_max_outbox_lag", d["ready_max_outbox_lag"], minimum=0, maximum=30 * DAY
        ),
        templates=_templates(table),
        workers=table.integer("workers", d["workers"], minimum=1, maximum=256),
        journal=table.file("journal", d["journal"]),
    )
    table.finish()
    return config


def _templates(table: _Table) -> Path | None:
    """`tracker.templates`: a folder that exists (its files are read and checked when
    the tracker starts, by `tracker.pages`); empty or absent, None."""
    text = table.optional("templates", str)
    if not text:
        return None
    path = table.anchored(text)
    if not path.is_dir():
        why = "it is a file" if path.exists() else "it does not exist"
        table.problem("templates", f"{_show(text)} is not a folder of templates ({why})")
        return None
    return path


def _store(root: _Table) -> StoreConfig:
    table = root.section("store")
    url = table.get("url", str, STORE_URL_DEFAULT, secret=True)
    retention_days = table.integer(
        "retention_days", field_defaults(StoreConfig)["retention_days"], minimum=1
    )
    table.finish()
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return StoreConfig(
            url=url,
            kind="sqlite",
            retention_days=retention_days,
            sqlite_path=table.anchored(url.removeprefix("sqlite:///")),
        )
    if url.startswith(("postgresql://", "postgres://")):
        return StoreConfig(url=url, kind="postgresql", retention_days=retention_days)
    shown = url if "@" not in url else _SECRET_SHOWN
    table.problem(
        "url",
        f"{_show(shown)} is not a store URL "
        "(sqlite:///PATH or postgresql://user:password@host/db)",
    )
    return StoreConfig(url=url, kind="sqlite", retention_days=retention_days)


_REASON = re.compile(r"[a-z0-9_]{1,64}")
_RULE_CONDITIONS = ("user_agent", "networks", "method", "after_delivery")


def _classify_rule(table: _Table) -> ClassifyRule:
    reason = table.get("reason", str, "")
    if not _REASON.fullmatch(reason):
        table.problem(
            "reason",
            f"{_show(reason)} is not a reason (1 to 64 of a-z, 0-9 and _, e.g. "
            '"corporate_scanner")',
        )
    d = field_defaults(ClassifyRule)
    verdict = table.choice("verdict", ("machine", "human", "proxy"), d["verdict"])
    kinds = table.strings("events", sorted(d["kinds"]))
    for index, kind in enumerate(kinds):
        if kind not in ("open", "click"):
            table.problem(f"events[{index}]", f"{_show(kind)} is not one of open, click")
    if not kinds:
        table.problem("events", "needs open, click or both")
    user_agent = table.optional("user_agent", str)
    if user_agent is not None:
        try:
            re.compile(user_agent)
        except re.error as exc:
            table.problem("user_agent", f"{_show(user_agent)} is not a regular expression: {exc}")
    networks = table.parsed_list("networks", d["networks"], parse_network)
    method = table.optional("method", str)
    if method is not None and method not in ("GET", "HEAD"):
        table.problem("method", f"{_show(method)} is not one of GET, HEAD")
    after_delivery = table.parsed_optional("after_delivery", parse_duration)
    if verdict == "proxy" and "click" in kinds:
        table.problem(
            "verdict",
            '"proxy" names the image proxy of a person\'s open: give it events = ["open"]',
        )
    if not any(key in table.data for key in _RULE_CONDITIONS):
        table.problems.append(
            f"{table.path}: a rule needs a condition: one of {', '.join(_RULE_CONDITIONS)}"
        )
    table.finish()
    return ClassifyRule(
        reason=reason,
        verdict=verdict,  # type: ignore[arg-type]
        kinds=frozenset(k for k in kinds if k in ("open", "click")),  # type: ignore[misc]
        user_agent=user_agent,
        networks=networks,
        method=method if method in ("GET", "HEAD") else None,  # type: ignore[arg-type]
        after_delivery=after_delivery,
    )


def _classify(root: _Table) -> ClassifyConfig:
    table = root.section("classify")
    d = field_defaults(ClassifyConfig)
    config = ClassifyConfig(
        click_after_delivery=table.parsed(
            "click_after_delivery", d["click_after_delivery"], parse_duration
        ),
        link_burst=table.parsed("link_burst", d["link_burst"], parse_duration),
        rules=tuple(_classify_rule(t) for t in table.tables("rules")),
    )
    table.finish()
    return config


def _signing(root: _Table) -> SigningConfig:
    table = root.section("signing")
    d = field_defaults(SigningConfig)
    keys = table.strings("keys", d["keys"], secret=True)
    for index, key in enumerate(keys):
        try:
            decode_signing_key(key)
        except ValueError as exc:
            table.problem(f"keys[{index}]", f"{_SECRET_SHOWN} is {exc}")
    if len(set(keys)) != len(keys):
        table.problem("keys", "lists the same key twice")
    key_file = table.file("key_file", d["key_file"])
    table.finish()
    return SigningConfig(keys=keys, key_file=key_file)


def _config_set(name: str, table: _Table) -> ConfigSet:
    if not _NAME.fullmatch(name):
        table.problems.append(
            f"config_sets.{name}: the name may only use letters, digits, _ and - (64 at most)"
        )
    d = field_defaults(ConfigSet)
    config_set = ConfigSet(
        name=name,
        open_tracking=table.get("open_tracking", bool, d["open_tracking"]),
        click_tracking=table.get("click_tracking", bool, d["click_tracking"]),
        tracking_url=table.parsed("tracking_url", d["tracking_url"], parse_http_url),
        destinations=table.strings("destinations", d["destinations"]),
        return_path_domain=table.parsed("return_path_domain", None, _domain),
        suppress_on=_suppress_on(table, d["suppress_on"]),
        unsubscribe=table.get("unsubscribe", bool, d["unsubscribe"]),
        unsubscribe_scope=table.choice(  # type: ignore[arg-type]
            "unsubscribe_scope", get_args(UnsubscribeScope), d["unsubscribe_scope"]
        ),
        unsubscribe_override=table.get("unsubscribe_override", bool, d["unsubscribe_override"]),
        track_text_links=table.get("track_text_links", bool, d["track_text_links"]),
    )
    table.finish()
    return config_set


def _domain(text: str, example: str = "bounces.example.com") -> str:
    """A mail domain, lowercased: a host name with at least one dot."""
    if not _HOSTNAME.fullmatch(text) or "." not in text.strip("."):
        raise ValueError(f"not a domain name ({example})")
    return text.rstrip(".").lower()


_SUPPRESS_ON: Final[dict[str, SuppressOn]] = {"bounce": "bounce", "complaint": "complaint"}


def _suppress_on(table: _Table, default: frozenset[SuppressOn]) -> frozenset[SuppressOn]:
    names = table.strings("suppress_on", tuple(sorted(default)))
    chosen: set[SuppressOn] = set()
    for index, name in enumerate(names):
        if name in _SUPPRESS_ON:
            chosen.add(_SUPPRESS_ON[name])
        else:
            table.problem(
                f"suppress_on[{index}]",
                f"{_show(name)} is not one of {', '.join(_SUPPRESS_ON)} ([] for neither)",
            )
    return frozenset(chosen)


_SIGNED_INPUT: Final[dict[str, SignedInput]] = {
    "resign": "resign",
    "skip-tracking": "skip-tracking",
    "track": "track",
}
_SELECTOR = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*"
)


def _dkim(root: _Table) -> DkimConfig:
    table = root.section("dkim")
    signed_input = None
    if (text := table.optional("signed_input", str)) is not None:
        signed_input = _SIGNED_INPUT.get(text)
        if signed_input is None:
            table.problem(
                "signed_input", f"{_show(text)} is not one of {', '.join(_SIGNED_INPUT)}"
            )
    domains = {}
    for name, domain_table in table.subtables("domains").items():
        try:
            domain = _domain(name, "example.com")
        except ValueError as exc:
            domain_table.problems.append(f"dkim.domains.{_show(name)}: {_show(name)} is {exc}")
            continue
        domains[domain] = _dkim_domain(domain, domain_table)
    table.finish()
    return DkimConfig(signed_input=signed_input, domains=domains)


def _selector(table: _Table, key: str) -> str | None:
    selector = table.optional(key, str)
    if selector is not None and not _SELECTOR.fullmatch(selector):
        table.problem(key, f"{_show(selector)} is not a selector (letters, digits, - and .)")
    return selector


def _dkim_domain(domain: str, table: _Table) -> DkimDomain:
    selector = _selector(table, "selector")
    key = table.optional("key", str)
    for name, value in (("selector", selector), ("key", key)):
        if value is None and name not in table.data:
            table.problem(name, "missing: a DKIM key needs a selector and a key file")
    ed25519_selector = _selector(table, "ed25519_selector")
    ed25519_key = table.optional("ed25519_key", str)
    if (ed25519_selector is None) != (ed25519_key is None):
        table.problem(
            "ed25519_key" if ed25519_key is None else "ed25519_selector",
            "missing: an Ed25519 key needs both ed25519_selector and ed25519_key",
        )
    config = DkimDomain(
        domain=domain,
        selector=selector or "",
        key=table.anchored(key or ""),
        ed25519_selector=ed25519_selector,
        ed25519_key=table.anchored(ed25519_key) if ed25519_key else None,
    )
    table.finish()
    return config


def _intake(root: _Table) -> IntakeConfig | None:
    table = root.table("intake")
    if table is None:
        return None
    d = field_defaults(IntakeConfig)
    listen = table.parsed_optional("listen", parse_host_port)
    domains = tuple(
        domain
        for index, text in enumerate(table.strings("domains", d["domains"]))
        if (domain := _checked_domain(table, f"domains[{index}]", text)) is not None
    )
    config = IntakeConfig(
        listen=listen or HostPort(host="127.0.0.1", port=0),
        domains=domains,
        max_message_bytes=table.integer("max_message_bytes", d["max_message_bytes"], minimum=1024),
        max_connections=table.integer(
            "max_connections", d["max_connections"], minimum=1, maximum=100_000
        ),
        max_connections_per_ip=table.integer(
            "max_connections_per_ip", d["max_connections_per_ip"], minimum=1, maximum=100_000
        ),
        timeout=table.duration("timeout", d["timeout"], minimum=1, maximum=DAY),
        proxy_protocol=table.get("proxy_protocol", bool, d["proxy_protocol"]),
    )
    if listen is None and "listen" not in table.data:
        table.problem("listen", 'missing: where the intake listens ("0.0.0.0:25")')
    table.finish()
    return config


def _checked_domain(table: _Table, key: str, text: str) -> str | None:
    try:
        return _domain(text)
    except ValueError as exc:
        table.problem(key, f"{_show(text)} is {exc}")
        return None


def _events(table: _Table) -> frozenset[EventType]:
    names = table.strings("events", (ALL,))
    result: set[EventType] = set()
    for index, name in enumerate(names):
        if name == ALL:
            result.update(EventType)
            continue
        try:
            result.add(EventType.from_config_name(name))
        except KeyError:
            known = " ".join(t.config_name for t in EventType)
            table.problem(
                f"events[{index}]", f"{_show(name)} is not an event type ({known}, or all)"
            )
    return frozenset(result)


DESTINATION_TYPES: Final = ("file", "webhook", "sns", "nats", "redis", "amqp")
_TEMPLATE_FIELDS: Final = ("config_set", "event_type")
_NATS_SUBJECT = re.compile(r"[A-Za-z0-9_{}-]+(\.[A-Za-z0-9_{}-]+)*")
_NATS_STREAM = re.compile(r"[A-Za-z0-9_-]{1,255}")
_TOPIC_ARN = re.compile(
    r"arn:[A-Za-z0-9-]{1,32}:sns:[A-Za-z0-9-]{0,32}:[A-Za-z0-9-]{0,32}:[A-Za-z0-9_.-]{1,256}"
)
"""SNS's own bounds on a topic's name (256); the rest bounded so that the subscription
URLs that carry it stay short."""


def _destination(name: str, table: _Table) -> Destination | None:
    if not _NAME.fullmatch(name):
        table.problems.append(
            f"destinations.{name}: the name may only use letters, digits, _ and - (64 at most)"
        )
    kind = table.get("type", str, "")
    destination: Destination | None
    if kind == "file":
        destination = _file(name, table)
    elif kind == "webhook":
        destination = _webhook(name, table)
    elif kind == "sns":
        destination = _sns(name, table)
    elif kind == "nats":
        destination = _nats(name, table)
    elif kind == "redis":
        destination = _redis(name, table)
    elif kind == "amqp":
        destination = _amqp(name, table)
    else:
        table.problem(
            "type", f"{_show(kind)} is not a destination type ({', '.join(DESTINATION_TYPES)})"
        )
        destination = None
    table.finish()
    return destination


def _file(name: str, table: _Table) -> FileDestination:
    path = table.get("path", str, "")
    if not path:
        table.problem("path", "is required for a file destination")
    d = field_defaults(FileDestination)
    file_format = table.choice("format", ("ses", "envelope"), d["format"])
    return FileDestination(
        name=name,
        events=_events(table),
        path=table.anchored(path),
        format="envelope" if file_format == "envelope" else "ses",
    )


def _endpoint(table: _Table) -> str:
    """An http(s) endpoint's URL (a query allowed)."""
    url = table.get("url", str, "")
    try:
        parse_http_url(url.split("?", 1)[0])
    except ValueError as exc:
        table.problem("url", f"{_show(url)} is {exc}")
    return url


def _webhook(name: str, table: _Table) -> WebhookDestination:
    url = _endpoint(table)
    secret = table.get("secret", str, "", secret=True)
    try:
        decode_webhook_secret(secret)
    except ValueError as exc:
        table.problem("secret", f"{_SECRET_SHOWN} is {exc}")
    d = field_defaults(WebhookDestination)
    return WebhookDestination(
        name=name,
        events=_events(table),
        url=url,
        secret=secret,
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        timeout=table.duration("timeout", d["timeout"], minimum=0.1, maximum=300),
    )


def _sns(name: str, table: _Table) -> SnsDestination:
    url = _endpoint(table)
    topic_arn = table.get("topic_arn", str, f"arn:pixelpost:sns:local:0:{name}")
    if not _TOPIC_ARN.fullmatch(topic_arn):
        table.problem(
            "topic_arn",
            f"{_show(topic_arn)} is not a topic ARN (arn:<partition>:sns:<region>:<account>:"
            "<topic>, such as arn:pixelpost:sns:local:0:marketing)",
        )
    d = field_defaults(SnsDestination)
    version = table.choice("signature_version", ("1", "2"), d["signature_version"])
    return SnsDestination(
        name=name,
        events=_events(table),
        url=url,
        topic_arn=topic_arn,
        confirm=table.get("confirm", bool, d["confirm"]),
        signature_version="1" if version == "1" else "2",
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        timeout=table.duration("timeout", d["timeout"], minimum=0.1, maximum=300),
    )


def _broker_url(table: _Table, default: str, schemes: tuple[str, ...]) -> str:
    """A broker's URL, which may hold a password: never shown in a problem."""
    url = table.get("url", str, default, secret=True)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        table.problem("url", f"{_SECRET_SHOWN} is not a URL")
        return default
    where = parts.path if parts.scheme == "unix" else parts.hostname  # a socket's path
    if parts.scheme not in schemes or not where:
        names = " or ".join(f"{scheme}://" for scheme in schemes)
        article = "an" if names[0] in "aeiou" else "a"
        table.problem(
            "url", f"{_show(describe_url(url))} is not {article} {names} URL with a host"
        )
        return default
    return url


def _template(table: _Table, key: str, default: str, pattern: re.Pattern[str]) -> str:
    """A subject or routing key with `{config_set}` and `{event_type}` filled in per
    event: only those two, and the rest a valid name."""
    text = table.get(key, str, default)
    names = re.findall(r"\{([^{}]*)\}", text)
    unknown = [n for n in names if n not in _TEMPLATE_FIELDS]
    if unknown:
        table.problem(
            key,
            f"{_show(text)} names {{{unknown[0]}}}: only {{config_set}} and {{event_type}} "
            "are filled in",
        )
        return default
    if not pattern.fullmatch(text):
        table.problem(key, f"{_show(text)} is not a valid name here")
        return default
    return text


def _nats(name: str, table: _Table) -> NatsDestination:
    d = field_defaults(NatsDestination)
    stream = table.get("stream", str, d["stream"])
    if not _NATS_STREAM.fullmatch(stream):
        table.problem("stream", f"{_show(stream)} is not a stream name (letters, digits, _ and -)")
        stream = d["stream"]
    return NatsDestination(
        name=name,
        events=_events(table),
        url=_broker_url(table, d["url"], ("nats", "tls")),
        stream=stream,
        subject=_template(table, "subject", d["subject"], _NATS_SUBJECT),
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        timeout=table.duration("timeout", d["timeout"], minimum=0.1, maximum=300),
    )


def _redis(name: str, table: _Table) -> RedisDestination:
    d = field_defaults(RedisDestination)
    stream = table.get("stream", str, d["stream"])
    if not stream or len(stream) > 1024:
        table.problem("stream", f"{_show(stream)} is not a stream key (1 to 1024 characters)")
        stream = d["stream"]
    return RedisDestination(
        name=name,
        events=_events(table),
        url=_broker_url(table, d["url"], ("redis", "rediss", "unix")),
        stream=stream,
        maxlen=table.integer("maxlen", d["maxlen"], minimum=0),
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        timeout=table.duration("timeout", d["timeout"], minimum=0.1, maximum=300),
    )


_AMQP_NAME = re.compile(r"[A-Za-z0-9_.:{}-]{0,255}")


def _amqp(name: str, table: _Table) -> AmqpDestination:
    d = field_defaults(AmqpDestination)
    exchange = table.get("exchange", str, d["exchange"])
    if not exchange or not _AMQP_NAME.fullmatch(exchange) or exchange.startswith("amq."):
        table.problem(
            "exchange",
            f"{_show(exchange)} is not an exchange name of ours (letters, digits, -_.:, "
            "not amq.*)",
        )
        exchange = d["exchange"]
    return AmqpDestination(
        name=name,
        events=_events(table),
        url=_broker_url(table, d["url"], ("amqp", "amqps")),
        exchange=exchange,
        routing_key=_template(table, "routing_key", d["routing_key"], _AMQP_NAME),
        retry_delays=_delays(table, "retry_delays", d["retry_delays"]),
        timeout=table.duration("timeout", d["timeout"], minimum=0.1, maximum=300),
    )


def _sns_config(root: _Table) -> SnsConfig:
    table = root.section("sns")
    d = field_defaults(SnsConfig)
    config = SnsConfig(
        key=table.file("key", d["key"]), certificate=table.file("certificate", d["certificate"])
    )
    table.finish()
    return config


def _folder(source: Path | None) -> Path | None:
    """The folder of the configuration file, absolute (without following links): what
    its relative paths are read against. None for the built-in defaults."""
    return None if source is None else Path(os.path.abspath(source)).parent


def _sections(root: _Table, source: Path | None) -> Config:
    """Every section read on its own, in the order their problems are listed; the
    records stand in for the defaults where a value was bad."""
    default_set = root.optional("default_config_set", str)
    relay = _relay(root)
    upstream = _upstream(root)
    tracker = _tracker(root)
    store = _store(root)
    signing = _signing(root)
    classify = _classify(root)
    intake = _intake(root)
    dkim = _dkim(root)
    sns = _sns_config(root)
    config_sets = {name: _config_set(name, t) for name, t in root.subtables("config_sets").items()}
    destinations = {
        name: destination
        for name, t in root.subtables("destinations").items()
        if (destination := _destination(name, t)) is not None
    }
    return Config(
        relay=relay,
        upstream=upstream,
        tracker=tracker,
        store=store,
        signing=signing,
        config_sets=config_sets,
        destinations=destinations,
        classify=classify,
        intake=intake,
        dkim=dkim,
        sns=sns,
        default_config_set=default_set,
        source=source,
    )


def _check_retention(root: _Table, config: Config) -> None:
    """The store keeps a message's records at least a day longer than the relay may
    keep retrying it, so that its late delivery or bounce still finds them."""
    store, relay = config.store, config.relay
    if (store.retention_days - 1) * DAY < relay.max_queue_lifetime:
        days = f"{store.retention_days} day{'s' if store.retention_days != 1 else ''}"
        root.problem(
            "store.retention_days",
            f"{days} is not a day longer than relay.max_queue_lifetime "
            f"({format_duration(relay.max_queue_lifetime)}): records of mail still queued "
            "would be cut",
        )


def _check_names(root: _Table, config: Config) -> None:
    """The default configuration set, and each set's destinations, name ones that are
    configured; a destination with a problem of its own is not reported twice."""
    default_set = config.default_config_set
    if default_set is not None and default_set not in config.config_sets:
        root.problem(
            "default_config_set",
            f"{_show(default_set)} is not a configuration set (no [config_sets.{default_set}])",
        )
    for config_set in config.config_sets.values():
        for index, name in enumerate(config_set.destinations):
            if name not in config.destinations and not any(
                p.startswith(f"destinations.{name}.") for p in root.problems
            ):
                root.problems.append(
                    f"config_sets.{config_set.name}.destinations[{index}]: {_show(name)} is not "
                    f"a destination (no [destinations.{name}])"
                )


def parse_config(
    data: Mapping[str, Any], *, environ: Mapping[str, str], source: Path | None = None
) -> Config:
    """Build the configuration from parsed TOML; ConfigError lists every problem."""
    problems: list[str] = []
    root = _Table(data, "", problems, environ, _folder(source))
    config = _sections(root, source)
    root.finish()
    _check_retention(root, config)
    _check_names(root, config)
    if problems:
        raise ConfigError(problems)
    return config


def parse_config_text(
    text: str, *, environ: Mapping[str, str], source: Path | None = None
) -> Config:
    """Build the configuration from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = source or "configuration"
        raise ConfigError([f"{where}: not valid TOML: {exc}"]) from None
    return parse_config(data, environ=environ, source=source)


def load_config(path: Path | None, *, environ: Mapping[str, str]) -> Config:
    """The configuration in `path`; with None, the file `PIXELPOST_CONFIG` names, else
    `./pixelpost.toml` if it exists, else the built-in defaults."""
    named_by = ""
    if path is None and environ.get(CONFIG_ENV):
        path, named_by = Path(environ[CONFIG_ENV]), f" (named by {CONFIG_ENV})"
    if path is None:
        if not DEFAULT_FILE.exists():
            return parse_config_text(BUILTIN_DEFAULTS, environ=environ)
        path = DEFAULT_FILE
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [f"{path}{named_by}: cannot read the configuration file ({exc})"]
        ) from None
    return parse_config_text(text, environ=environ, source=path)
