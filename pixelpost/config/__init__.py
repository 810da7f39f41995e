"""Configuration: TOML parsed once into frozen records (`records`), by `loader`, with the
value syntaxes in `values`."""

from pixelpost.config.loader import (
    BUILTIN_DEFAULTS,
    DEFAULT_FILE,
    load_config,
    parse_config,
    parse_config_text,
)
from pixelpost.config.records import (
    ClassifyConfig,
    ClassifyRule,
    Config,
    ConfigSet,
    Destination,
    FileDestination,
    IntakeConfig,
    MaildirUpstream,
    RelayConfig,
    RelayTLS,
    RelayUser,
    SigningConfig,
    SMTPUpstream,
    StoreConfig,
    TrackerConfig,
    Upstream,
    WebhookDestination,
)
from pixelpost.core.values import HostPort, IPNetwork

__all__ = [
    "BUILTIN_DEFAULTS",
    "DEFAULT_FILE",
    "ClassifyConfig",
    "ClassifyRule",
    "Config",
    "ConfigSet",
    "Destination",
    "FileDestination",
    "HostPort",
    "IPNetwork",
    "IntakeConfig",
    "MaildirUpstream",
    "RelayConfig",
    "RelayTLS",
    "RelayUser",
    "SMTPUpstream",
    "SigningConfig",
    "StoreConfig",
    "TrackerConfig",
    "Upstream",
    "WebhookDestination",
    "load_config",
    "parse_config",
    "parse_config_text",
]
