"""Imports run one way (pyproject.toml's [tool.importlinter], docs/architecture.md): the
project keeps its contracts, and a back-import, added to a copy of the tree, breaks
them, named in the report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pixelpost", "relay", "tracker", "pipeline")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_project_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The core reaching up to the shell.
        (
            "pixelpost/core/ids.py",
            "import pixelpost.app.cli",
            "pixelpost.core.ids -> pixelpost.app",
        ),
        # A shared module reaching up to a service.
        ("pixelpost/store/buffer.py", "import tracker.views", "pixelpost.store.buffer -> tracker"),
        # One service reaching into another: they meet only in the shell.
        ("tracker/client.py", "import relay.tracking", "tracker.client -> relay.tracking"),
        # The core doing I/O.
        ("pixelpost/core/tokens.py", "import aiohttp", "pixelpost.core.tokens -> aiohttp"),
    ],
)
def test_a_back_import_breaks_the_contracts(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert broken in result.stdout, result.stdout
