"""Issue 21's acceptance for NATS, as the README writes it: its `pixelpost.toml` and
its shell commands (swaks, then nats-py reading the stream) run by bash against
`pixelpost serve` and the machine's NATS server. Only the ports, the stream's name and
its subjects are changed, to ones of this test's own."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from tests.e2e.conftest import BIN, Running, start
from tests.net import free_port
from tests.tools import need_swaks_with_tls

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Reading events from NATS"
NATS_URL = "nats://127.0.0.1:4222"


def readme_blocks() -> tuple[str, str]:
    """The section's configuration file and its shell commands."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    [config] = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    [commands] = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return config, commands


async def _delete_stream(name: str) -> None:
    connection = await nats.connect(NATS_URL)
    try:
        await connection.jetstream().delete_stream(name)
    except NotFoundError:
        pass
    finally:
        await connection.close()


def test_the_readme_nats_walkthrough(tmp_path: Path, processes: list[Running]) -> None:
    swaks = need_swaks_with_tls()
    config, commands = readme_blocks()
    prefix = f"readme{uuid.uuid4().hex[:12]}"
    stream = f"{prefix}-stream"
    assert 'stream = "pixelpost"' in config
    config = config.replace('stream = "pixelpost"', f'stream = "{stream}"')
    config += f'subject = "{prefix}.events.{{config_set}}.{{event_type}}"\n'
    config += f'\n[relay]\nlisten = "127.0.0.1:0"\n[tracker]\nlisten = "127.0.0.1:{free_port()}"\n'
    (tmp_path / "pixelpost.toml").write_text(config)
    running = start([str(BIN / "pixelpost"), "serve"], cwd=tmp_path)
    processes.append(running)
    assert '"pixelpost.events.>"' in commands
    script = (
        commands.replace("127.0.0.1:2525", f"127.0.0.1:{running.smtp_port}")
        .replace('"pixelpost.events.>"', f'"{prefix}.events.>"')
        .replace("swaks ", f"{swaks} ", 1)
        .replace("python3 -", f"{BIN / 'python'} -", 1)
    )
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    try:
        result = subprocess.run(
            ["bash", "-c", "set -e\n" + script],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line.split() for line in result.stdout.splitlines() if line.startswith(prefix)]
        assert [(subject, kind) for subject, _id, kind in lines] == [
            (f"{prefix}.events.default.send", "Send"),
            (f"{prefix}.events.default.delivery", "Delivery"),
        ]
        ids = [event_id for _subject, event_id, _kind in lines]
        assert len(set(ids)) == 2
        assert all(len(event_id) >= 16 for event_id in ids)
    finally:
        asyncio.run(_delete_stream(stream))
