"""The wheel as `pipx install` uses it: built from a copy of the project, installed in a
fresh virtual environment, and run from there, away from the checkout."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from pixelpost import __version__
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.e2e.conftest import ROOT, Running, delivered, start
from tests.e2e.test_serve import MESSAGE, assert_clean_exit, healthz
from tests.tools import need

pytestmark = pytest.mark.slow

INSTALL_TIMEOUT = 300
API_TOKEN = "packaging-test-token-0123456789"
PACKAGES = ("pixelpost", "relay", "tracker", "pipeline")
LEFT_BEHIND = {".git", ".venv", "build", "dist", "var", "artifacts"}
"""What .gitignore keeps out of the project's top folder..."""
CACHES = ("__pycache__", "_cache", ".hypothesis", ".egg-info")
"""... and out of every folder."""
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command away from the checkout (`python -c` imports from its folder)."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **QUIET_PIP, **(env or {})},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def _not_the_project(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {name for name in names if (top and name in LEFT_BEHIND) or name.endswith(CACHES)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the project as a clone has it: a build in the checkout
    itself would write build/ there, and a stale build/ can leak into the wheel."""
    source = tmp_path_factory.mktemp("source") / "pixelpost"
    shutil.copytree(ROOT, source, ignore=_not_the_project)
    dist = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source],
        cwd=dist,
    )
    [built] = dist.glob("pixelpost-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtual environment with the wheel installed."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", venv], cwd=venv)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=venv)
    return venv / "bin"


def source_files(package: str, pattern: str) -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).glob(pattern)
        if "__pycache__" not in path.parts
    )


def test_the_wheel_holds_the_program_and_what_it_reads(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"pixelpost-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()

    read_at_run_time = [
        *source_files("pixelpost", "store/migrations/**/*.sql"),
        *source_files("tracker", "static/*"),
        *source_files("tracker", "templates/*"),
    ]
    assert any(name.endswith(".sql") for name in read_at_run_time)
    assert "tracker/static/dashboard.html" in read_at_run_time
    assert "tracker/templates/unsubscribe.html" in read_at_run_time
    code = [name for package in PACKAGES for name in source_files(package, "**/*.py")]
    typed = [f"{package}/py.typed" for package in PACKAGES]
    assert set(read_at_run_time + code + typed) <= names

    assert {name.split("/")[0] for name in names} == {*PACKAGES, info}
    assert not [name for name in names if name.startswith(("tests/", "bench/"))]
    assert f"{info}/licenses/LICENSE" in names
    assert f"\nVersion: {__version__}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "pixelpost = pixelpost.app.cli:main" in entry_points


def test_the_installed_command_says_its_version_and_checks_a_configuration(
    installed: Path, tmp_path: Path
) -> None:
    version = run([installed / "pixelpost", "--version"], cwd=tmp_path)
    assert version == f"pixelpost {__version__}\n"
    where = run(
        [installed / "python", "-c", "import pixelpost, tracker; print(tracker.__file__)"],
        cwd=tmp_path,
    )
    assert Path(where.strip()).is_relative_to(installed.parent), "not the installed package"

    config = write_config(tmp_path)

    def check_config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [installed / "pixelpost", "check-config", "-c", config],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    checked = check_config()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config.write_text(config.read_text().replace('"127.0.0.1:0"', '"127.0.0.1:99999"', 1))
    broken = check_config()
    assert broken.returncode == 1
    assert "relay.listen" in broken.stdout + broken.stderr


def write_config(folder: Path) -> Path:
    """A small configuration: both listeners on free ports, everything under folder/var."""
    var = folder / "var"
    config = folder / "pixelpost.toml"
    config.write_text(
        f"""
default_config_set = "default"

[relay]
listen = "127.0.0.1:0"
spool = "{var / "spool"}"

[upstream]
url = "maildir:{var / "outbox"}"

[tracker]
listen = "127.0.0.1:0"
public_url = "https://t.example"
api_token = "{API_TOKEN}"

[store]
url = "sqlite:///{var / "pixelpost.db"}"

[signing]
key_file = "{var / "signing.key"}"

[config_sets.default]
"""
    )
    return config


def fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return response.read()  # type: ignore[no-any-return]


def test_the_installed_command_serves_from_an_empty_folder(
    installed: Path, tmp_path: Path, processes: list[Running]
) -> None:
    config = write_config(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    running = start([str(installed / "pixelpost"), "serve", "-c", str(config)], cwd=empty)
    processes.append(running)

    assert healthz(running.http_url) == {"status": "ok", "version": __version__}
    page = fetch(f"{running.http_url}/dashboard")
    assert page == (ROOT / "tracker/static/dashboard.html").read_bytes()
    script = fetch(f"{running.http_url}/dashboard/static/dashboard.js")
    assert script == (ROOT / "tracker/static/dashboard.js").read_bytes()
    # The unsubscribe page, from the templates the wheel ships.
    key = decode_signing_key((tmp_path / "var" / "signing.key").read_text().strip())
    token = TokenCodec([key]).unsubscribe_token(
        "01a228d20a21020c7c34c59663927ded",
        address="rcpt@example.org",
        config_set="default",
        account=False,
    )
    unsubscribe = fetch(f"{running.http_url}/u/{token}").decode()
    assert 'Unsubscribe <span class="address">rcpt@example.org</span>' in unsubscribe
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.sendmail(
            "sender@example.com",
            ["rcpt@example.org"],
            MESSAGE.replace(b"X-Config-Set: marketing", b"X-Config-Set: default"),
        )
    [message] = delivered(tmp_path / "var" / "outbox")
    assert message.read_bytes().endswith(b"\r\nHello from the end-to-end test.\r\n")
    assert_clean_exit(running, signal.SIGINT)


def test_pipx_installs_the_wheel(wheel: Path, tmp_path: Path) -> None:
    pipx = need("pipx")
    home, bin_dir = tmp_path / "pipx", tmp_path / "bin"
    pipx_env = {"PIPX_HOME": str(home), "PIPX_BIN_DIR": str(bin_dir)}
    run([pipx, "install", wheel], cwd=tmp_path, env=pipx_env)
    assert (bin_dir / "pixelpost").resolve().is_relative_to(home)
    version = run([bin_dir / "pixelpost", "--version"], cwd=tmp_path)
    assert version == f"pixelpost {__version__}\n"
