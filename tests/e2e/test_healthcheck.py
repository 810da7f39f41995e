"""`pixelpost healthcheck` against `pixelpost serve` and `pixelpost relay` running in a
subprocess, as a container's or systemd's probe runs it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.conftest import config_text
from tests.e2e.conftest import BIN, Running, start


def healthcheck(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status, and what it printed (both streams)."""
    result = subprocess.run(
        [str(BIN / "pixelpost"), "healthcheck", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


def pin(config: Path, table: str, key: str, address: str) -> None:
    """The configuration with `[table] key = "127.0.0.1:0"` made the address the
    process got, as a deployment writes it."""
    text = config.read_text()
    at = text.index(f"[{table}]\n")
    assert f'{key} = "127.0.0.1:0"' in text[at:]
    config.write_text(
        text[:at] + text[at:].replace(f'{key} = "127.0.0.1:0"', f'{key} = "{address}"', 1)
    )


def test_healthcheck_says_ready_for_serve_and_names_the_address_once_it_stopped(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = tmp_path / "pixelpost.toml"
    config.write_text(config_text(f"maildir:{tmp_path / 'outbox'}", tmp_path))
    running = start([str(BIN / "pixelpost"), "serve", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    assert healthcheck("-c", str(config), cwd=tmp_path) == (
        1,
        "pixelpost: tracker.listen is 127.0.0.1:0: a port picked at each start; give --url\n",
    )
    address = running.http_url.removeprefix("http://")
    pin(config, "tracker", "listen", address)

    assert healthcheck("-c", str(config), cwd=tmp_path) == (
        0,
        "ready: store ok, outbox ok, spool ok\n",
    )
    assert healthcheck("--url", f"http://{address}/readyz", cwd=tmp_path)[0] == 0

    assert running.stop(signal.SIGTERM) == 0
    status, said = healthcheck("-c", str(config), "--timeout", "2", cwd=tmp_path)
    assert status == 1
    assert said == f"pixelpost: nothing answers at http://{address}/readyz: connection refused\n"


def test_healthcheck_asks_a_relay_alone_on_its_own_listener(
    tmp_path: Path, processes: list[Running]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        config_text(
            f"maildir:{tmp_path / 'outbox'}", tmp_path, relay='http_listen = "127.0.0.1:0"'
        )
    )
    running = start([str(BIN / "pixelpost"), "relay", "-c", str(config)], cwd=tmp_path)
    processes.append(running)
    address = running.value("relay http").removeprefix("http://")
    pin(config, "relay", "http_listen", address)
    # As a container gets its configuration: PIXELPOST_CONFIG, no -c.
    environment = {"PATH": "/usr/bin:/bin", "PIXELPOST_CONFIG": str(config)}

    assert healthcheck("--relay", cwd=tmp_path, env=environment) == (
        0,
        "ready: store ok, outbox skipped, spool ok\n",
    )
    (tmp_path / "spool").rename(tmp_path / "spool-moved")
    status, said = healthcheck("--relay", cwd=tmp_path, env=environment)
    assert status == 1
    assert said.startswith(f"pixelpost: not ready (http://{address}/readyz): spool: ")
    (tmp_path / "spool-moved").rename(tmp_path / "spool")

    assert running.stop(signal.SIGTERM) == 0
    assert healthcheck("--relay", cwd=tmp_path, env=environment) == (
        1,
        f"pixelpost: nothing answers at http://{address}/readyz: connection refused\n",
    )
