"""deploy/: the systemd units checked by systemd itself (`systemd-analyze verify`), the
settings they promise read from the files, the sysusers.d user made in a scratch root,
and the example configuration for /etc/pixelpost checked by `pixelpost check-config`."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from pixelpost.app.cli import build_parser
from pixelpost.app.processes import STOP_GRACE
from tests.e2e.conftest import BIN, ROOT
from tests.tools import need

DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
UNITS = {
    "pixelpost.service": "serve",
    "pixelpost-relay.service": "relay",
    "pixelpost-tracker.service": "tracker",
}
"""Each unit and the pixelpost command it runs."""
LISTENS_ON_LOW_PORTS = {"pixelpost.service", "pixelpost-relay.service"}
"""The units that run the relay, which may listen on port 25, 465 or 587."""
STATE = "/var/lib/pixelpost"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "UMask": "0027",
}


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Each section's keys and their values in order (a key may be given more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in (raw.strip() for raw in path.read_text().splitlines()):
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: continued lines are not read here"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(name: str) -> dict[str, str]:
    """The unit's [Service] settings, each key's last value (the one systemd uses)."""
    return {key: values[-1] for key, values in read_unit(SYSTEMD / name)["Service"].items()}


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", value)
    assert match, f"not a time span this test reads: {value!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


def checkable_copy(name: str, folder: Path, text: str | None = None) -> Path:
    """A copy of a unit (or of `text`) whose ExecStart runs a pixelpost that exists here:
    verify refuses a unit whose command is not an executable file."""
    text = (SYSTEMD / name).read_text() if text is None else text
    copy = folder / name
    copy.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={BIN / 'pixelpost'}", text, count=1))
    return copy


def verify(unit: Path) -> list[str]:
    """What `systemd-analyze verify` says about a unit file: nothing when it is right. An
    unknown key or a value that does not parse is only a warning (exit status 0), so
    every line it prints counts."""
    result = subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", "--recursive-errors=no", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0 and not said:
        said.append(f"exit status {result.returncode}")
    return said


def test_the_units_are_those_documented() -> None:
    assert sorted(path.name for path in SYSTEMD.glob("*.service")) == sorted(UNITS)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    assert verify(checkable_copy(name, tmp_path)) == []


@pytest.mark.parametrize(
    ("line", "broken", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict", "Unknown key 'ProtectSytem'"),
        ("ProtectSystem=strict", "ProtectSystem=stric", "stric"),
        ("TimeoutStopSec=90", "TimeoutStopSec=90x", "90x"),
        ("[Service]", "[Servce]", "Unknown section 'Servce'"),
    ],
)
def test_verify_catches_a_typo(line: str, broken: str, complaint: str, tmp_path: Path) -> None:
    text = (SYSTEMD / "pixelpost.service").read_text()
    assert text.count(f"\n{line}\n") == 1
    copy = checkable_copy("pixelpost.service", tmp_path, text.replace(line, broken))
    said = verify(copy)
    assert any(complaint in problem for problem in said), said


def test_verify_catches_a_command_that_is_not_there(tmp_path: Path) -> None:
    """Why the checks run a copy: as installed, the unit names /usr/local/bin/pixelpost."""
    copy = tmp_path / "pixelpost.service"
    text = (SYSTEMD / "pixelpost.service").read_text()
    copy.write_text(text.replace("/usr/local/bin/pixelpost", str(tmp_path / "no-pixelpost")))
    assert any("no-pixelpost is not executable" in problem for problem in verify(copy))


@pytest.mark.parametrize(("name", "command"), sorted(UNITS.items()))
def test_the_unit_runs_pixelpost_as_its_own_user_in_a_sandbox(name: str, command: str) -> None:
    settings = service(name)

    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == "/usr/local/bin/pixelpost"
    args = build_parser().parse_args(argv[1:])
    assert args.command == command
    assert args.config is None  # PIXELPOST_CONFIG names it, for every command alike
    environment = read_unit(SYSTEMD / name)["Service"]["Environment"]
    assert "PIXELPOST_CONFIG=/etc/pixelpost/pixelpost.toml" in environment

    assert settings["User"] == "pixelpost"
    assert settings["Group"] == "pixelpost"
    assert shlex.split(settings["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["KillMode"] == "mixed"  # the main process stops its children itself
    assert seconds(settings["TimeoutStopSec"]) > STOP_GRACE
    assert settings["Restart"] == "on-failure"
    assert settings["StateDirectory"] == PurePosixPath(STATE).name
    assert settings["WorkingDirectory"] == STATE
    assert STATE in settings["ReadWritePaths"].split()
    assert {key: settings.get(key) for key in HARDENING} == HARDENING

    if name in LISTENS_ON_LOW_PORTS:
        assert settings["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        assert settings["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    else:
        assert "AmbientCapabilities" not in settings
        assert settings["CapabilityBoundingSet"] == ""
    assert read_unit(SYSTEMD / name)["Install"]["WantedBy"] == ["multi-user.target"]


def test_serve_and_the_relay_and_tracker_pair_exclude_each_other() -> None:
    conflicts = {name: read_unit(SYSTEMD / name)["Unit"]["Conflicts"] for name in UNITS}
    assert conflicts["pixelpost.service"] == ["pixelpost-relay.service pixelpost-tracker.service"]
    assert conflicts["pixelpost-relay.service"] == ["pixelpost.service"]
    assert conflicts["pixelpost-tracker.service"] == ["pixelpost.service"]


def test_the_install_instructions_put_pixelpost_where_the_units_run_it() -> None:
    folder = str(PurePosixPath(service("pixelpost.service")["ExecStart"].split()[0]).parent)
    instructions = (DEPLOY / "README.md").read_text()
    assert re.findall(r"PIPX_BIN_DIR=(\S+) pipx install", instructions) == [folder]
    for name in UNITS:
        assert f"PIPX_BIN_DIR={folder}" in (SYSTEMD / name).read_text()


def test_sysusers_makes_the_user_with_the_state_directory_as_home(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [need("systemd-sysusers"), f"--root={tmp_path}", SYSTEMD / "pixelpost.conf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    users = {
        fields[0]: fields
        for fields in (line.split(":") for line in (tmp_path / "etc/passwd").read_text().split())
    }
    groups = [line.split(":")[0] for line in (tmp_path / "etc/group").read_text().split()]
    assert users["pixelpost"][5] == STATE
    assert users["pixelpost"][6].endswith("/nologin")
    assert "pixelpost" in groups


def test_the_example_configuration_keeps_everything_in_the_state_directory() -> None:
    example = DEPLOY / "pixelpost.toml"
    result = subprocess.run(
        [BIN / "pixelpost", "check-config", "-c", example],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    data = tomllib.loads(example.read_text())
    written = [
        data["relay"]["spool"],
        data["store"]["url"].removeprefix("sqlite:///"),
        data["signing"]["key_file"],
        *(
            destination["path"]
            for destination in data["destinations"].values()
            if destination["type"] == "file"
        ),
    ]
    assert all(PurePosixPath(path).is_relative_to(STATE) for path in written), written
