"""Where a configuration's relative paths point, and which file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpost.config import (
    BUILTIN_DEFAULTS,
    FileDestination,
    MaildirUpstream,
    SMTPUpstream,
    load_config,
    parse_config_text,
)
from pixelpost.errors import ConfigError

RELATIVE = """
[relay]
spool = "var/spool"
[relay.tls]
cert = "tls/relay.crt"
key = "/etc/ssl/private/relay.key"
[upstream]
url = "maildir:./outbox"
[store]
url = "sqlite:///./var/pixelpost.db"
[signing]
key_file = "../keys/signing.key"
[destinations.archive]
type = "file"
path = "events.jsonl"
"""


def test_relative_paths_are_read_from_the_configuration_files_folder() -> None:
    config = parse_config_text(RELATIVE, environ={}, source=Path("/etc/pixelpost/pp.toml"))

    assert config.relay.spool == Path("/etc/pixelpost/var/spool")
    assert config.relay.tls is not None
    assert config.relay.tls.cert == Path("/etc/pixelpost/tls/relay.crt")
    assert config.relay.tls.key == Path("/etc/ssl/private/relay.key")  # absolute: as written
    assert isinstance(config.upstream, MaildirUpstream)
    assert config.upstream.path == Path("/etc/pixelpost/outbox")
    assert config.store.sqlite_path == Path("/etc/pixelpost/var/pixelpost.db")
    assert config.signing.key_file == Path("/etc/keys/signing.key")
    archive = config.destinations["archive"]
    assert isinstance(archive, FileDestination)
    assert archive.path == Path("/etc/pixelpost/events.jsonl")


def test_a_relative_configuration_file_is_anchored_where_it_was_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "pixelpost.toml").write_text(
        '[upstream]\nurl = "smtp://mx.internal"\nca_file = "ca.pem"\n'
    )
    monkeypatch.chdir(tmp_path / "run1")

    config = load_config(Path("../run1/pixelpost.toml"), environ={})

    assert isinstance(config.upstream, SMTPUpstream)
    assert config.upstream.ca_file == tmp_path / "run1" / "ca.pem"
    assert config.relay.spool == tmp_path / "run1" / "var" / "spool"  # the default, too


def test_the_builtin_defaults_stay_relative_to_the_working_directory() -> None:
    config = parse_config_text(BUILTIN_DEFAULTS, environ={})

    assert config.relay.spool == Path("var/spool")
    assert config.store.sqlite_path == Path("var/pixelpost.db")


def test_pixelpost_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = tmp_path / "named.toml"
    path.write_text('[relay]\nhostname = "named.test"\n')

    assert load_config(None, environ={"PIXELPOST_CONFIG": str(path)}).relay.hostname == (
        "named.test"
    )
    given = tmp_path / "given.toml"
    given.write_text('[relay]\nhostname = "given.test"\n')
    assert load_config(given, environ={"PIXELPOST_CONFIG": str(path)}).relay.hostname == (
        "given.test"
    )
    with pytest.raises(ConfigError) as missing:
        load_config(None, environ={"PIXELPOST_CONFIG": str(tmp_path / "gone.toml")})
    assert missing.value.problems[0].startswith(
        f"{tmp_path / 'gone.toml'} (named by PIXELPOST_CONFIG): cannot read"
    )
