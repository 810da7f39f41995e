"""The configuration as frozen, typed records: what the rest of pixelpost reads.

The loader (`loader.py`) builds these once from TOML; nothing else parses configuration.
The fields' defaults are the defaults: the loader takes them from here (`field_defaults`),
and tests check `config.example.toml` and the README against them. Secrets are kept out
of `repr` so that a logged record never shows them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pixelpost.core.event_types import EventType
from pixelpost.core.values import DAY, HOUR, MINUTE, HostPort, IPNetwork


def field_defaults(record: type[Any]) -> dict[str, Any]:
    """The default of each of `record`'s fields that has one, by field name."""
    return {
        f.name: f.default
        for f in dataclasses.fields(record)
        if f.default is not dataclasses.MISSING
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayUser:
    """An SMTP AUTH account (`[[relay.users]]`)."""

    name: str
    password_hash: str = field(repr=False)
    from_domains: tuple[str, ...] | None = None
    """Domains this user may send from (MAIL FROM); None allows any."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayTLS:
    """The relay's certificate: STARTTLS on `listen`, implicit TLS on `listen_tls`."""

    cert: Path
    key: Path
    listen_tls: HostPort | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayConfig:
    """The SMTP side (`[relay]`)."""

    listen: HostPort = HostPort(host="127.0.0.1", port=2525)  # noqa: RUF009 (frozen)
    hostname: str
    """The name in the greeting and in Received: headers (the loader's default: the
    machine's host name)."""
    max_message_bytes: int = 25 * 1024 * 1024
    allow_networks: tuple[IPNetwork, ...] = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
    spool: Path = Path("var/spool")
    workers: int = 1
    concurrency: int = 20
    """Deliveries in flight per relay process (and pooled upstream connections)."""
    retry_delays: tuple[float, ...] = (
        MINUTE,
        5 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        2 * HOUR,
        4 * HOUR,
    )
    """Waits between delivery attempts after each deferral; the last one repeats."""
    max_queue_lifetime: float = 2 * DAY
    bounce_notifications: bool = True
    users: tuple[RelayUser, ...] = ()
    tls: RelayTLS | None = None
    max_recipients: int = 1000
    """Recipients per message, as Postfix's `smtpd_recipient_limit`; more get 452."""
    max_connections: int = 500
    """Connections at once per relay process; more get 421."""
    max_connections_per_ip: int = 50
    """Connections at once from one client address per relay process; more get 421."""
    timeout: float = 5 * MINUTE
    """Seconds a client may take for a command, or for a whole message after DATA."""
    bare_newlines: Literal["normalize", "reject"] = "normalize"
    """What becomes of a bare LF or CR in a message: made CRLF, or the message refused."""
    proxy_protocol: bool = False
    """Every connection starts with a PROXY header (v1 or v2) from a load balancer."""
    http_listen: HostPort | None = None
    """Where the relay answers /metrics, /healthz and /readyz over HTTP; None: nowhere
    (the tracker answers them for a process that runs it)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SMTPUpstream:
    """An upstream MTA reached over SMTP."""

    url: str
    security: Literal["opportunistic", "starttls", "tls"]
    """STARTTLS when offered (smtp://), STARTTLS required (smtp+starttls://), implicit
    TLS (smtps://)."""
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout: float = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class MaildirUpstream:
    """A Maildir that takes one file per delivered message (for trying pixelpost out)."""

    url: str
    path: Path


Upstream = SMTPUpstream | MaildirUpstream


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackerConfig:
    """The HTTP side (`[tracker]`)."""

    listen: HostPort = HostPort(host="127.0.0.1", port=8080)  # noqa: RUF009 (frozen)
    public_url: str
    """The base of the pixel and of rewritten links (the loader's default: http://
    and `listen`)."""
    trusted_proxies: tuple[IPNetwork, ...] = (IPv4Network("127.0.0.1/32"), IPv6Network("::1/128"))
    api_token: str | None = field(default=None, repr=False)
    anonymize_ip: bool = False
    header_timeout: float = 15.0
    """Seconds a client has to send a request's line and headers, from connecting or
    from its previous answer; an idle connection is closed after as long."""
    max_connections: int = 500
    """Connections at once; more are answered 503 and closed."""
    max_connections_per_ip: int = 50
    """Connections at once from one client address; the trusted proxies count only in
    `max_connections` (every recipient comes through them)."""
    ready_max_outbox_lag: float = 5 * MINUTE
    """/readyz fails while an event has waited longer than this to be delivered (or
    routed); 0 leaves the outbox out of readiness."""
    workers: int = 1
    """Tracker processes serving the one listening port, each with a store connection
    and a hit buffer of its own (the dispatcher runs once beside them)."""
    journal: Path = Path("var/hits")
    """Where opens and clicks answered before the store took them are kept, fsync'd,
    until it does (pixelpost.store.journal); the tracker processes of one machine may
    share it."""
    templates: Path | None = None
    """A folder of templates replacing the built-in unsubscribe pages by name, with
    translations in folders named by language (`de/unsubscribe.html`); None: the
    built-in ones (tracker/templates/)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClassifyRule:
    """A rule of `[[classify.rules]]` (see `pixelpost.core.classify`), checked before the
    built-in ones."""

    reason: str
    verdict: Literal["machine", "human", "proxy"] = "machine"
    kinds: frozenset[Literal["open", "click"]] = frozenset(("open", "click"))
    user_agent: str | None = None
    """A regular expression, searched case-insensitively."""
    networks: tuple[IPNetwork, ...] = ()
    method: Literal["GET", "HEAD"] | None = None
    after_delivery: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ClassifyConfig:
    """How opens and clicks are told to be machines' (`[classify]`)."""

    click_after_delivery: float = 10.0
    """A click sooner than this after delivery is a scanner's; 0 turns the rule off."""
    link_burst: float = 1.0
    """A click on another link of the same copy by the same client within this is a
    bot's; 0 turns the rule off."""
    rules: tuple[ClassifyRule, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreConfig:
    """Where messages and events are kept (`[store]`)."""

    url: str
    kind: Literal["sqlite", "postgresql"]
    retention_days: int = 60
    sqlite_path: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SigningConfig:
    """Keys that sign tracking links (`[signing]`), newest first."""

    keys: tuple[str, ...] = field(default=(), repr=False)
    key_file: Path = Path("var/signing.key")
    """Where a key is generated and kept when `keys` is empty."""


UnsubscribeScope = Literal["config_set", "account"]
SuppressOn = Literal["bounce", "complaint"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ConfigSet:
    """A configuration set: what to track and where its events go."""

    name: str
    open_tracking: bool = True
    click_tracking: bool = True
    tracking_url: str | None = None
    """Base URL of this set's pixel and redirects; None uses `tracker.public_url`."""
    destinations: tuple[str, ...] = ()
    return_path_domain: str | None = None
    """Each copy goes out with envelope sender `b-<token>@<this domain>` (VERP), whose
    mail comes back to the intake; None keeps the sender's own."""
    suppress_on: frozenset[SuppressOn] = frozenset(("bounce", "complaint"))
    """What puts a recipient on the suppression list: a Permanent bounce, a complaint."""
    unsubscribe: bool = False
    """Each copy gets RFC 8058 one-click `List-Unsubscribe` fields, and SES's
    `{{amazonSESUnsubscribeUrl}}` placeholder becomes its unsubscribe URL."""
    unsubscribe_scope: UnsubscribeScope = "config_set"
    """What an unsubscribe stops: mail of this set ("config_set") or all mail ("account")."""
    unsubscribe_override: bool = False
    """Replace a message's own `List-Unsubscribe` fields (kept by default)."""
    track_text_links: bool = False
    """Track http(s) links in text/plain parts too (SES tracks HTML only)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IntakeConfig:
    """The SMTP listener for mail that comes back (`[intake]`): delivery status
    notifications, complaint reports."""

    listen: HostPort
    domains: tuple[str, ...] = ()
    """Domains taken besides every configuration set's return_path_domain (where a
    feedback loop or a forwarded bounce mailbox sends)."""
    max_message_bytes: int = 10 * 1024 * 1024
    max_connections: int = 100
    max_connections_per_ip: int = 20
    timeout: float = 5 * MINUTE
    proxy_protocol: bool = False


FileFormat = Literal["ses", "envelope"]

HTTP_RETRY_DELAYS: tuple[float, ...] = (
    5.0,
    5 * MINUTE,
    30 * MINUTE,
    2 * HOUR,
    5 * HOUR,
    10 * HOUR,
    10 * HOUR,
)
"""Waits between attempts after an endpoint's failure, Standard Webhooks' schedule; after
the last, the event is a dead letter."""
BROKER_RETRY_DELAYS: tuple[float, ...] = (
    1.0,
    5.0,
    30.0,
    2 * MINUTE,
    10 * MINUTE,
    30 * MINUTE,
    2 * HOUR,
    6 * HOUR,
    12 * HOUR,
)
"""Waits between attempts after a broker refused an event (a broker that cannot be
reached is no attempt: its events wait, however long, and are never dead letters)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FileDestination:
    """Events appended as JSON lines to a file."""

    name: str
    events: frozenset[EventType]
    path: Path
    format: FileFormat = "ses"
    """"ses": each line the SES event; "envelope": `{"id": <event id>, "event": {…}}`,
    so that a reader can tell a line appended twice (at least once) from a new one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookDestination:
    """Events POSTed as Standard Webhooks."""

    name: str
    events: frozenset[EventType]
    url: str
    secret: str = field(repr=False)
    retry_delays: tuple[float, ...] = HTTP_RETRY_DELAYS
    """Waits between attempts after a failure; after the last, the event is a dead
    letter."""
    timeout: float = 15.0


SignatureVersion = Literal["1", "2"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SnsDestination:
    """Events POSTed to an HTTP(S) endpoint exactly as Amazon SNS delivers a topic's
    notifications to a subscribed endpoint, signed with `[sns]`'s key."""

    name: str
    events: frozenset[EventType]
    url: str
    topic_arn: str
    """The topic the endpoint believes it is subscribed to
    (`arn:pixelpost:sns:local:0:<name>` unless set)."""
    confirm: bool = True
    """Send a SubscriptionConfirmation first and the events only once the endpoint has
    visited its SubscribeURL; false sends events at once."""
    signature_version: SignatureVersion = "2"
    """"2": SHA256withRSA; "1": SHA1withRSA (what django-ses 4 verifies)."""
    retry_delays: tuple[float, ...] = HTTP_RETRY_DELAYS
    timeout: float = 15.0


@dataclass(frozen=True, kw_only=True, slots=True)
class NatsDestination:
    """Events published to a NATS JetStream stream, acknowledged, with `Nats-Msg-Id`."""

    name: str
    events: frozenset[EventType]
    url: str = field(default="nats://127.0.0.1:4222", repr=False)
    stream: str = "pixelpost"
    """Created, taking `subject`'s subjects, when it does not exist."""
    subject: str = "pixelpost.events.{config_set}.{event_type}"
    """`{config_set}` and `{event_type}` (`delivery`, `open` …) are filled in per event."""
    retry_delays: tuple[float, ...] = BROKER_RETRY_DELAYS
    timeout: float = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RedisDestination:
    """Events appended to a Redis stream (`XADD`), fields `id` and `event`."""

    name: str
    events: frozenset[EventType]
    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    stream: str = "pixelpost:events"
    maxlen: int = 1_000_000
    """The stream is trimmed to about this many entries (`MAXLEN ~`); 0 never trims."""
    retry_delays: tuple[float, ...] = BROKER_RETRY_DELAYS
    timeout: float = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AmqpDestination:
    """Events published to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms."""

    name: str
    events: frozenset[EventType]
    url: str = field(default="amqp://guest:guest@127.0.0.1:5672/", repr=False)
    exchange: str = "pixelpost.events"
    """A durable topic exchange, declared when it does not exist."""
    routing_key: str = "{config_set}.{event_type}"
    retry_delays: tuple[float, ...] = BROKER_RETRY_DELAYS
    timeout: float = 10.0


Destination = (
    FileDestination
    | WebhookDestination
    | SnsDestination
    | NatsDestination
    | RedisDestination
    | AmqpDestination
)
BrokerDestination = NatsDestination | RedisDestination | AmqpDestination


@dataclass(frozen=True, kw_only=True, slots=True)
class SnsConfig:
    """The key SNS-compatible destinations sign with (`[sns]`), and its certificate,
    which the tracker serves at `SigningCertURL`."""

    key: Path = Path("var/sns/signing-key.pem")
    certificate: Path = Path("var/sns/signing-cert.pem")


SignedInput = Literal["resign", "skip-tracking", "track"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DkimDomain:
    """The keys that sign mail from a domain and its subdomains
    (`[dkim.domains."example.com"]`)."""

    domain: str
    """Lowercased."""
    selector: str
    key: Path
    """An RSA private key (PEM), 2048 bits or more advised."""
    ed25519_selector: str | None = None
    ed25519_key: Path | None = None
    """A second, Ed25519 key (RFC 8463) for dual signing, with its own selector."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DkimConfig:
    """DKIM signing (`[dkim]`): each copy is signed last, after its tracking."""

    signed_input: SignedInput | None = None
    """What becomes of a tracked message that arrives signed already: "resign" (its
    signature removed, pixelpost's added), "skip-tracking" (sent untouched), "track"
    (its signature broken knowingly). None: "resign" when there is a key for its From
    domain, else "skip-tracking"."""
    domains: Mapping[str, DkimDomain] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The whole configuration."""

    relay: RelayConfig
    upstream: Upstream
    tracker: TrackerConfig
    store: StoreConfig
    signing: SigningConfig
    config_sets: Mapping[str, ConfigSet]
    destinations: Mapping[str, Destination]
    classify: ClassifyConfig = ClassifyConfig()
    intake: IntakeConfig | None = None
    """None: no intake listener."""
    dkim: DkimConfig = DkimConfig()
    sns: SnsConfig = SnsConfig()
    default_config_set: str | None = None
    """The set for mail without `X-Config-Set`; None leaves such mail untracked."""
    source: Path | None = None
    """The file this was read from; None for the built-in defaults."""

    def return_path_domains(self) -> frozenset[str]:
        """The domains the intake takes mail for, lowercased."""
        domains = {s.return_path_domain for s in self.config_sets.values()}
        domains.update(self.intake.domains if self.intake else ())
        return frozenset(d.lower() for d in domains if d)

    def tracking_url(self, config_set: ConfigSet) -> str:
        """The base URL under which `config_set`'s pixel and redirects are served."""
        return config_set.tracking_url or self.tracker.public_url
