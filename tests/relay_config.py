"""A configuration for `pixelpost relay` run as a process against a local sink, shared by
the crash test and the benchmarks (which may import from `tests/`, not the reverse)."""

from __future__ import annotations

from pathlib import Path

from pixelpost.config.records import RelayConfig, field_defaults

CONNECTIONS_LIMIT = 10_000
"""max_connections and max_connections_per_ip, the relay's and the tracker's: every test
or benchmark client connects from 127.0.0.1, and what is measured is what pixelpost does
with the whole load, not the limits that keep one client of a real network from taking
it all."""
RECIPIENTS_LIMIT: int = field_defaults(RelayConfig)["max_recipients"]
"""relay.max_recipients, pixelpost's default."""


def relay_config(
    workdir: Path,
    port: int,
    sink_port: int,
    config_set: str = "tracked",
    workers: int = 1,
    *,
    max_recipients: int = RECIPIENTS_LIMIT,
    max_message_bytes: int | None = None,
) -> Path:
    """`pixelpost relay` on `port` delivering to `sink_port`, with the spool, store and key
    under `workdir`, and two configuration sets: "tracked" (opens and clicks) and
    "untracked". `max_message_bytes` None keeps the default."""
    size_limit = "" if max_message_bytes is None else f"max_message_bytes = {max_message_bytes}"
    path = workdir / f"{config_set}.toml"
    path.write_text(
        f"""
default_config_set = "{config_set}"
[relay]
listen = "127.0.0.1:{port}"
workers = {workers}
hostname = "relay.test"
spool = "{workdir / "spool"}"
max_connections = {CONNECTIONS_LIMIT}
max_connections_per_ip = {CONNECTIONS_LIMIT}
max_recipients = {max_recipients}
{size_limit}
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example.com"
[store]
url = "sqlite:///{workdir / "pixelpost.db"}"
[signing]
key_file = "{workdir / "signing.key"}"
[config_sets.tracked]
open_tracking = true
click_tracking = true
[config_sets.untracked]
open_tracking = false
click_tracking = false
"""
    )
    return path
