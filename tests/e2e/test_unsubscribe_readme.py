"""Issue 19's acceptance, as the README writes it: its `pixelpost.toml` and its shell
commands, run by bash against `pixelpost serve` (only the ports changed to free ones):
both fields on the delivered copy, curl's one-click POST, the Subscription event, the
address on the set's list, and the next message to it not delivered."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.e2e.conftest import BIN, Running, delivered, start, until
from tests.net import free_port
from tests.tools import need, need_swaks_with_tls

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Unsubscribes: one click"


def readme_blocks() -> tuple[str, str]:
    """The section's configuration file and its shell commands."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    [config] = [b for b in re.findall(r"```toml\n(.*?)```", section, re.DOTALL) if "[intake]" in b]
    [commands] = [b for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL) if "swaks" in b]
    return config, commands


def events_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_readme_unsubscribe_walkthrough(tmp_path: Path, processes: list[Running]) -> None:
    need("curl")
    swaks = need_swaks_with_tls()
    config, commands = readme_blocks()
    intake_port, tracker_port = free_port(), free_port()
    assert 'listen = "127.0.0.1:2526"' in config
    config = config.replace("127.0.0.1:2526", f"127.0.0.1:{intake_port}")
    config += (
        f'\n[relay]\nlisten = "127.0.0.1:0"\n[tracker]\nlisten = "127.0.0.1:{tracker_port}"\n'
    )
    (tmp_path / "pixelpost.toml").write_text(config)
    running = start([str(BIN / "pixelpost"), "serve"], cwd=tmp_path)
    processes.append(running)
    assert running.http_url == f"http://127.0.0.1:{tracker_port}"
    script = (
        commands.replace("127.0.0.1:2525", f"127.0.0.1:{running.smtp_port}")
        .replace("http://127.0.0.1:8080", running.http_url)
        .replace("swaks ", f"{swaks} ", 1)
    )
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}

    # The copy must be there before the grep: bash runs the lines one after another.
    send, rest = script.split("\ngrep", 1)
    sent = subprocess.run(["bash", "-c", send], cwd=tmp_path, env=environ, timeout=60, check=False)
    assert sent.returncode == 0
    [copy] = delivered(tmp_path / "var" / "outbox")
    # So must the event before its grep: the dispatcher appends it within a second.
    unsubscribe, listing = ("grep" + rest).split("\ngrep Subscription", 1)
    events = tmp_path / "var" / "events.jsonl"

    def run(lines: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -e\n" + lines],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    first = run(unsubscribe)
    assert first.returncode == 0, first.stdout + first.stderr
    until(lambda: "Subscription" in events.read_text(), "the Subscription event")
    second = run("grep Subscription" + listing)
    done = subprocess.CompletedProcess(
        first.args, second.returncode, first.stdout + second.stdout, first.stderr + second.stderr
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    assert f"<{running.http_url}/u/" in out
    assert "You are unsubscribed." in out  # curl's one-click POST, answered 200
    assert '"eventType":"Subscription"' in out
    assert re.search(r"UNSUBSCRIBE\s+[0-9a-f]{32}\s+jane@example.org", out), out
    assert "1 address on the suppression list of configuration set news" in out
    [subscription] = [e for e in events_of(events) if e["eventType"] == "Subscription"]
    assert subscription["subscription"]["source"] == "UnsubscribeHeader"  # type: ignore[index]
    assert copy.read_text().count(f"{running.http_url}/u/") == 2  # the field and the link

    # "Send to jane@example.org again and no copy lands": a Bounce instead.
    again = subprocess.run(
        ["bash", "-c", send], cwd=tmp_path, env=environ, timeout=60, check=False
    )
    assert again.returncode == 0

    def bounced() -> list[dict[str, object]]:
        return [e for e in events_of(events) if e["eventType"] == "Bounce"]

    until(bounced, "the Bounce")
    [bounce] = bounced()
    assert bounce["bounce"]["bounceSubType"] == "OnAccountSuppressionList"  # type: ignore[index]
    assert len(list((tmp_path / "var" / "outbox" / "new").iterdir())) == 1
    assert running.stop() == 0
