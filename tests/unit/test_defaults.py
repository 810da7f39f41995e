"""Defaults have one home, the configuration records' field defaults: the loader applies
them, and `config.example.toml` and the README state them. Each test here fails when one
of those drifts from the records."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pixelpost.config import (
    BUILTIN_DEFAULTS,
    ClassifyConfig,
    Config,
    ConfigSet,
    RelayConfig,
    SigningConfig,
    SMTPUpstream,
    StoreConfig,
    TrackerConfig,
    WebhookDestination,
    parse_config,
    parse_config_text,
)
from pixelpost.config.records import field_defaults
from pixelpost.core.values import DAY, MINUTE, parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = tomllib.loads((ROOT / "config.example.toml").read_text("utf-8"))
README = " ".join((ROOT / "README.md").read_text("utf-8").split())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

RECORDS: dict[str, type[Any]] = {
    "relay": RelayConfig,
    "upstream": SMTPUpstream,
    "tracker": TrackerConfig,
    "classify": ClassifyConfig,
    "store": StoreConfig,
    "signing": SigningConfig,
    "config_sets": ConfigSet,
    "destinations": WebhookDestination,
}
BASES: dict[str, dict[str, object]] = {
    # An SMTP upstream, the kind that has a timeout (and a login).
    "upstream": {"url": "smtp://mx.example.net"},
    "destinations": {"type": "webhook", "url": "https://hooks.example.net", "secret": SECRET},
}
"""What a table needs besides the key under test to be read as the record it documents."""

ON_PURPOSE = {
    # A placeholder for the default, the machine's own host name.
    "relay.hostname",
    # The example's sets send their events to the example's destinations.
    "config_sets.default.destinations",
    "config_sets.marketing.destinations",
}
"""Keys that config.example.toml sets to something other than their default, on purpose."""


def _is_table(value: object) -> bool:
    """A table or an array of tables (`[relay.tls]`, `[[relay.users]]`)."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(item, dict) for item in value)
    return isinstance(value, dict)


def _example_keys() -> dict[str, tuple[tuple[str, ...], object]]:
    """The keys config.example.toml sets (commented-out ones it does not), by dotted
    name: their path in the TOML and their value."""
    found: dict[str, tuple[tuple[str, ...], object]] = {}
    for section in ("relay", "upstream", "tracker", "classify", "store", "signing"):
        for key, value in EXAMPLE.get(section, {}).items():
            if not _is_table(value):
                found[f"{section}.{key}"] = ((section, key), value)
    for name, table in EXAMPLE["config_sets"].items():
        for key, value in table.items():
            found[f"config_sets.{name}.{key}"] = (("config_sets", name, key), value)
    for name, table in EXAMPLE["destinations"].items():
        if table["type"] == "webhook":
            for key in ("retry_delays", "timeout"):
                if key in table:
                    found[f"destinations.{name}.{key}"] = (("destinations", name, key), table[key])
    return found


EXAMPLE_KEYS = _example_keys()


def _alone(section: str, name: str | None = None, **keys: object) -> Config:
    """The configuration of one table: its base and `keys` (a key given None is left
    out), read with an empty environment, so that "${NAME:-fallback}" is the fallback."""
    table = {k: v for k, v in {**BASES.get(section, {}), **keys}.items() if v is not None}
    data: dict[str, object] = {section: {name: table} if name else table}
    return parse_config(data, environ={})


def test_the_loader_applies_the_records_defaults() -> None:
    defaults = parse_config_text(BUILTIN_DEFAULTS, environ={})
    records = {
        "relay": defaults.relay,
        "tracker": defaults.tracker,
        "classify": defaults.classify,
        "store": defaults.store,
        "signing": defaults.signing,
        "upstream": _alone("upstream").upstream,
        "destinations": _alone("destinations", "hook").destinations["hook"],
        "config_sets": _alone("config_sets", "set").config_sets["set"],
    }
    derived = {"store.sqlite_path"}  # the loader reads it out of store.url
    for section, record in records.items():
        assert isinstance(record, RECORDS[section])
        for name, default in field_defaults(RECORDS[section]).items():
            if f"{section}.{name}" not in derived:
                assert getattr(record, name) == default, f"{section}.{name}"


@pytest.mark.parametrize("key", sorted(set(EXAMPLE_KEYS) - ON_PURPOSE))
def test_the_example_config_shows_each_default(key: str) -> None:
    (section, *names, name), value = EXAMPLE_KEYS[key]
    table = names[0] if names else None
    assert _alone(section, table, **{name: value}) == _alone(section, table, **{name: None}), (
        f"config.example.toml sets {key} = {value!r}, not its default "
        f"{field_defaults(RECORDS[section]).get(name, '(derived)')!r}"
    )


def test_the_keys_set_apart_on_purpose_are_in_the_example() -> None:
    assert set(EXAMPLE_KEYS) >= ON_PURPOSE


def _durations(text: str) -> tuple[float, ...]:
    return tuple(parse_duration(item) for item in text.split(", "))


def _spoken(text: str) -> float:
    """A number as the README writes it: `60`, `10 s`, `5 minutes`, `2 days`."""
    number, _, unit = text.partition(" ")
    return float(number) * {"": 1.0, "s": 1.0, "minutes": MINUTE, "days": DAY}[unit]


README_DEFAULTS: list[tuple[str, Callable[[str], object], str]] = [
    # (the key, how to read the value, the README's words with the value as their group)
    ("relay.retry_delays", _durations, r"`relay\.retry_delays` in turn \(([^)]*), the last one"),
    ("relay.max_queue_lifetime", _spoken, r"`relay\.max_queue_lifetime` \((\d+ days)\)"),
    ("tracker.header_timeout", _spoken, r"`tracker\.header_timeout` \((\d+ s)\)"),
    ("tracker.max_connections", _spoken, r"`tracker\.max_connections` \((\d+)\)"),
    ("tracker.max_connections_per_ip", _spoken, r"`tracker\.max_connections_per_ip` \((\d+)\)"),
    ("tracker.ready_max_outbox_lag", _spoken, r"`tracker\.ready_max_outbox_lag`, (\d+ minutes)"),
    ("store.retention_days", _spoken, r"retention_days` \((\d+)\)"),
    ("classify.click_after_delivery", _spoken, r"click_after_delivery` \((\d+ s)\)"),
    ("classify.link_burst", _spoken, r"`link_burst` \((\d+ s)\)"),
]


@pytest.mark.parametrize(
    ("key", "read", "pattern"), README_DEFAULTS, ids=[key for key, _, _ in README_DEFAULTS]
)
def test_the_readme_states_each_default(
    key: str, read: Callable[[str], object], pattern: str
) -> None:
    section, name = key.split(".")
    default = field_defaults(RECORDS[section])[name]
    stated = re.findall(pattern, README)
    assert stated, f"the README no longer says /{pattern}/: update this test's table"
    for text in stated:
        assert read(text) == default, f"the README says {key} is {text}, the default is {default}"
