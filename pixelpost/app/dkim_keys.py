"""The DKIM keys that `[dkim.domains]` names, read from their files: at start, where a
key that does not load stops pixelpost with a line naming it, and by `check-config`."""

from __future__ import annotations

from pathlib import Path

from pixelpost.config import DkimConfig
from pixelpost.core.dkim import DkimError, DkimKey, load_key
from pixelpost.errors import ConfigError


def _read(key: str, path: Path, domain: str, selector: str) -> DkimKey | str:
    """The key in `path`, or the problem with it, naming the configuration key."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return f"{key}: cannot read the key file {str(path)!r}: {reason}"
    try:
        return load_key(domain=domain, selector=selector, pem=pem)
    except DkimError as exc:
        return f"{key}: {str(path)!r}: {exc}"


def dkim_keys(config: DkimConfig) -> tuple[list[DkimKey], list[str]]:
    """Every configured key that loads, and one line for each that does not."""
    keys: list[DkimKey] = []
    problems: list[str] = []
    for domain, entry in sorted(config.domains.items()):
        prefix = f'dkim.domains."{domain}"'
        found = [_read(f"{prefix}.key", entry.key, domain, entry.selector)]
        if entry.ed25519_key is not None and entry.ed25519_selector is not None:
            found.append(
                _read(f"{prefix}.ed25519_key", entry.ed25519_key, domain, entry.ed25519_selector)
            )
        for result in found:
            if isinstance(result, str):
                problems.append(result)
            else:
                keys.append(result)
    return keys, problems


def load_dkim_keys(config: DkimConfig) -> list[DkimKey]:
    """Every configured key; ConfigError naming each that does not load."""
    keys, problems = dkim_keys(config)
    if problems:
        raise ConfigError(problems)
    return keys
